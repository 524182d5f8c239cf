package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/identity"
)

// waitPoll is how often --wait asks the broker about a request.
const waitPoll = 500 * time.Millisecond

func init() {
	c := &cobra.Command{Use: "request", Short: "Ask for extra roles for a while, and review others' requests"}
	c.AddCommand(requestCreateCmd(), requestLsCmd(), requestReviewCmd())
	root.AddCommand(c)
	addLoginRequestID()
}

// addLoginRequestID gives `tg login` the --request-id flag: with it, the
// current certificate is exchanged for one that also carries the roles of
// approved access requests, without a password.
func addLoginRequestID() {
	var login *cobra.Command
	for _, c := range root.Commands() {
		if c.Name() == "login" {
			login = c
		}
	}
	if login == nil {
		return
	}
	var ids []string
	login.Flags().StringSliceVar(&ids, "request-id", nil, "approved access request(s) whose roles the new certificate carries (no password needed)")
	passwordLogin := login.RunE
	login.RunE = func(cmd *cobra.Command, args []string) error {
		if len(ids) == 0 {
			return passwordLogin(cmd, args)
		}
		ctx, cancel := withTimeout(cmd.Context())
		defer cancel()
		return assumeRequests(ctx, cmd, ids)
	}
}

// withAPI runs fn with a client of the broker's API for the current
// identity, within tg's timeout for one command.
func withAPI(cmd *cobra.Command, fn func(ctx context.Context, c *api.Client) error) error {
	_, _, c, err := requestClient()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := withTimeout(cmd.Context())
	defer cancel()
	return fn(ctx, c)
}

func requestClient() (*identity.File, string, *api.Client, error) {
	f, path, err := currentIdentity()
	if err != nil {
		return nil, "", nil, err
	}
	if err := checkExpiry(f); err != nil {
		return nil, "", nil, err
	}
	c, err := apiClient(f)
	if err != nil {
		return nil, "", nil, err
	}
	return f, path, c, nil
}

func requestCreateCmd() *cobra.Command {
	var (
		req  api.CreateAccessRequest
		dur  time.Duration
		wait bool
	)
	c := &cobra.Command{
		Use:   "create --roles=R[,R] [--reason=TEXT] [--max-duration=DUR] [--wait]",
		Short: "Request roles; with --wait, wait for the review and take the roles at once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(req.Roles) == 0 {
				return errors.New("--roles is required")
			}
			req.MaxDuration = api.Duration(dur)
			return withAPI(cmd, func(ctx context.Context, c *api.Client) error {
				r, err := c.CreateAccessRequest(ctx, req)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "access request %s for roles %s created; it needs %d approval(s) by %s\n",
					r.ID, strings.Join(r.Roles, ","), r.ApprovalsNeeded, r.PendingUntil.UTC().Format(time.RFC3339))
				if !wait {
					fmt.Fprintf(out, "once approved: tg login --request-id=%s\n", r.ID)
					return nil
				}
				// Waiting may outlast one command's timeout: it lasts as long
				// as the request may stay pending.
				wctx, wcancel := context.WithDeadline(cmd.Context(), r.PendingUntil.Add(5*time.Second))
				defer wcancel()
				fmt.Fprintln(cmd.ErrOrStderr(), "waiting for the review…")
				for r.State == "pending" {
					select {
					case <-wctx.Done():
						return fmt.Errorf("access request %s is still pending: %w", r.ID, wctx.Err())
					case <-time.After(waitPoll):
					}
					if r, err = c.AccessRequest(wctx, r.ID); err != nil {
						return err
					}
				}
				if r.State != "approved" {
					return fmt.Errorf("access request %s was %s: %s", r.ID, r.State, r.UpdateReason)
				}
				return assumeRequests(wctx, cmd, []string{r.ID})
			})
		},
	}
	fl := c.Flags()
	fl.StringSliceVar(&req.Roles, "roles", nil, "roles to request")
	fl.StringVar(&req.Reason, "reason", "", "why you need them (some roles require it)")
	fl.DurationVar(&dur, "max-duration", 0, "how long the access should last (default: the longest your roles allow)")
	fl.BoolVar(&wait, "wait", false, "wait for the review, then reissue the certificate with the roles")
	return c
}

// assumeRequests replaces the current certificate with one carrying the
// roles of the approved requests ids, valid until their grant ends.
func assumeRequests(ctx context.Context, cmd *cobra.Command, ids []string) error {
	f, path, c, err := requestClient()
	if err != nil {
		return err
	}
	defer c.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	pub, err := api.EncodePublicKey(key.Public())
	if err != nil {
		return err
	}
	res, err := c.ReissueAccess(ctx, api.ReissueAccessRequest{PublicKey: pub, RequestIDs: ids})
	if err != nil {
		return err
	}
	cert, err := parseCert(res.CertPEM)
	if err != nil {
		return fmt.Errorf("the broker's answer: certificate: %w", err)
	}
	userCA, err := parseCert(res.UserCAPEM)
	if err != nil {
		return fmt.Errorf("the broker's answer: user CA: %w", err)
	}
	hostCA, err := parseCert(res.HostCAPEM)
	if err != nil {
		return fmt.Errorf("the broker's answer: host CA: %w", err)
	}
	// The proxy is trusted already: the host CA must be the one f pins.
	if !pinned(f, hostCA) {
		return fmt.Errorf("the broker names host CA %s, which this identity does not trust; refusing the certificate", api.Fingerprint(hostCA))
	}
	nf, err := identity.NewFile(f.ProxyAddr, key, cert, []*x509.Certificate{userCA, hostCA})
	if err != nil {
		return err
	}
	if err := identity.WriteFile(path, nf); err != nil {
		return err
	}
	id := nf.Identity
	fmt.Fprintf(cmd.OutOrStdout(), "logged in as %s (roles %s, access requests %s) until %s\n", id.User,
		strings.Join(id.Roles, ","), strings.Join(id.AccessRequests, ","), id.Expires.Local().Format(time.RFC3339))
	return nil
}

func pinned(f *identity.File, ca *x509.Certificate) bool {
	for _, c := range f.CACerts {
		if c.Equal(ca) {
			return true
		}
	}
	return false
}

func requestLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List your requests and those you may review",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAPI(cmd, func(ctx context.Context, c *api.Client) error {
				rs, err := c.AccessRequests(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tREQUESTER\tROLES\tSTATE\tAPPROVALS\tACCESS UNTIL\tREASON")
				for _, r := range rs {
					a := 0
					for _, v := range r.Reviews {
						if v.Verdict == "approve" {
							a++
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", r.ID, r.Requester, strings.Join(r.Roles, ","), r.State,
						a, r.ApprovalsNeeded, r.Expires.UTC().Format(time.RFC3339), r.Reason)
				}
				return tw.Flush()
			})
		},
	}
}

func requestReviewCmd() *cobra.Command {
	var (
		approve, deny bool
		reason        string
	)
	c := &cobra.Command{
		Use:   "review ID --approve|--deny [--reason=TEXT]",
		Short: "Approve or deny someone's access request",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if approve == deny {
				return errors.New("give exactly one of --approve or --deny")
			}
			verdict := "approve"
			if deny {
				verdict = "deny"
			}
			return withAPI(cmd, func(ctx context.Context, c *api.Client) error {
				r, err := c.ReviewAccessRequest(ctx, args[0], api.ReviewAccessRequest{Verdict: verdict, Reason: reason})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "access request %s: %s (requester %s, roles %s)\n", r.ID, r.State, r.Requester, strings.Join(r.Roles, ","))
				return nil
			})
		},
	}
	c.Flags().BoolVar(&approve, "approve", false, "approve the request")
	c.Flags().BoolVar(&deny, "deny", false, "deny the request")
	c.Flags().StringVar(&reason, "reason", "", "why (recorded in the event)")
	return c
}
