package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/identity"
	// The access-request webhook is an exporter sink (type
	// access_request_webhook).
	_ "github.com/tollgate-db/tollgate/broker/notify"
	"github.com/tollgate-db/tollgate/broker/requests"
	"github.com/tollgate-db/tollgate/events"
)

func init() {
	c := &cobra.Command{Use: "requests", Short: "List, approve and deny access requests"}
	c.AddCommand(requestsLsCmd(), requestsReviewCmd("approve", events.ReviewApprove), requestsReviewCmd("deny", events.ReviewDeny))
	root.AddCommand(c)
}

// withBroker runs fn with the broker the flags name: the remote one of
// --identity (api.Client), else the local data dir's (daemon.Local).
func withBroker(cmd *cobra.Command, fn func(ctx context.Context, local *daemon.Local, remote *api.Client) error) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	if flagIdentity != "" {
		f, err := identity.LoadFile(flagIdentity)
		if err != nil {
			return err
		}
		if f.ProxyAddr == "" {
			return fmt.Errorf("identity file %s names no proxy (Proxy: header)", flagIdentity)
		}
		host, err := api.ServerName(f.ProxyAddr)
		if err != nil {
			return fmt.Errorf("identity file %s: %w", flagIdentity, err)
		}
		c, err := api.NewClient(f.ProxyAddr, api.TLSConfig(host, f.CAs, &f.Cert), "tollgate")
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(ctx, nil, c)
	}
	cfg, err := adminConfig()
	if err != nil {
		return err
	}
	l, err := daemon.Attach(ctx, cfg)
	if err != nil {
		return err
	}
	defer l.Close()
	return fn(ctx, l, nil)
}

// withRequests runs fn with the access requests of the broker the flags
// name.
func withRequests(cmd *cobra.Command, fn func(ctx context.Context, a requests.Admin) error) error {
	return withBroker(cmd, func(ctx context.Context, l *daemon.Local, remote *api.Client) error {
		if remote != nil {
			return fn(ctx, remote)
		}
		svc, err := requests.New(ctx, l.JS, l.Store, requests.Options{Actor: daemon.Actor})
		if err != nil {
			return err
		}
		defer svc.Close()
		a := daemon.LocalActor()
		return fn(ctx, requests.Local{Svc: svc, Caller: identity.Identity{User: a.User, Roles: a.Roles}})
	})
}

func requestsLsCmd() *cobra.Command {
	var format, stateFilter string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List access requests, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withRequests(cmd, func(ctx context.Context, a requests.Admin) error {
				rs, err := a.AccessRequests(ctx)
				if err != nil {
					return err
				}
				if stateFilter != "" {
					kept := rs[:0]
					for _, r := range rs {
						if r.State == stateFilter {
							kept = append(kept, r)
						}
					}
					rs = kept
				}
				return printRequests(cmd, format, rs)
			})
		},
	}
	c.Flags().StringVar(&format, "format", "text", "text or json")
	c.Flags().StringVar(&stateFilter, "state", "", "only requests in this state: pending, approved, denied or expired")
	return c
}

// printRequests prints access requests as a table or JSON; tg uses the
// same layout.
func printRequests(cmd *cobra.Command, format string, rs []api.AccessRequest) error {
	return printList(cmd.OutOrStdout(), format, rs,
		[]string{"ID", "REQUESTER", "ROLES", "STATE", "APPROVALS", "CREATED", "ACCESS UNTIL", "REASON"},
		func(r api.AccessRequest) []string {
			a := 0
			for _, v := range r.Reviews {
				if v.Verdict == events.ReviewApprove {
					a++
				}
			}
			reason := r.Reason
			if r.UpdateReason != "" {
				reason += " [" + r.State + ": " + r.UpdateReason + "]"
			}
			return []string{r.ID, r.Requester, strings.Join(r.Roles, ","), r.State, fmt.Sprintf("%d/%d", a, r.ApprovalsNeeded),
				r.Created.UTC().Format(time.RFC3339), r.Expires.UTC().Format(time.RFC3339), reason}
		})
}

func requestsReviewCmd(name, verdict string) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   name + " ID [--reason=TEXT]",
		Short: strings.ToUpper(name[:1]) + name[1:] + " an access request",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withRequests(cmd, func(ctx context.Context, a requests.Admin) error {
				r, err := a.ReviewAccessRequest(ctx, args[0], api.ReviewAccessRequest{Verdict: verdict, Reason: reason})
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), reviewedText(r))
				return nil
			})
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why (recorded in the event)")
	return c
}

func reviewedText(r *api.AccessRequest) string {
	a := 0
	for _, v := range r.Reviews {
		if v.Verdict == events.ReviewApprove {
			a++
		}
	}
	switch r.State {
	case "approved":
		return fmt.Sprintf("access request %s approved: %s may use roles %s until %s (tg login --request-id=%s)",
			r.ID, r.Requester, strings.Join(r.Roles, ","), r.Expires.UTC().Format(time.RFC3339), r.ID)
	case "pending":
		return fmt.Sprintf("access request %s: %d of %d approvals", r.ID, a, r.ApprovalsNeeded)
	}
	return fmt.Sprintf("access request %s %s", r.ID, r.State)
}
