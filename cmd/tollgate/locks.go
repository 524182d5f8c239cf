package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/locks"
)

func init() {
	c := &cobra.Command{Use: "locks", Short: "Lock users, roles or sessions: live sessions end at once, new ones are refused"}
	c.AddCommand(locksAddCmd(), locksLsCmd(), locksRmCmd())
	root.AddCommand(c)
}

func withLocks(cmd *cobra.Command, fn func(ctx context.Context, a locks.Admin, dir api.Admin) error) error {
	return withBroker(cmd, func(ctx context.Context, l *daemon.Local, remote *api.Client) error {
		if remote != nil {
			return fn(ctx, remote, remote)
		}
		return fn(ctx, locks.Local{Store: l.Store, By: daemon.LocalActor()}, l.Admin.As(daemon.LocalActor(), ""))
	})
}

// unknownLockTarget says when the user or role a lock names does not exist
// (yet): a lock ahead of a user's creation is legitimate, a misspelt name
// locks nobody. It is silent when the lists cannot be read.
func unknownLockTarget(ctx context.Context, dir api.Admin, req api.AddLockRequest) string {
	switch {
	case req.TargetUser != "":
		us, err := dir.Users(ctx)
		if err != nil {
			return ""
		}
		for _, u := range us {
			if u.Name == req.TargetUser {
				return ""
			}
		}
		return fmt.Sprintf("no user %s exists yet; the lock applies if one is created (tollgate users ls lists the users)", req.TargetUser)
	case req.TargetRole != "":
		rs, err := dir.Roles(ctx)
		if err != nil {
			return ""
		}
		names := make([]string, 0, len(rs))
		for _, r := range rs {
			if r.Name() == req.TargetRole {
				return ""
			}
			names = append(names, r.Name())
		}
		return fmt.Sprintf("no role %s exists yet; the lock applies if one is created (roles: %s)", req.TargetRole, listOrNone(names))
	}
	return ""
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func locksAddCmd() *cobra.Command {
	var req api.AddLockRequest
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "add --user=U|--role=R|--session=SID [--ttl=DUR] [--message=TEXT]",
		Short: "Place a lock",
		Long: `Place a lock on a user, on every holder of a role, or on one session. Agents end
the matching live sessions at once, telling the client the message in its
protocol's own error form, and refuse new sessions while the lock holds; the
broker refuses the locked user's API calls. Without --ttl the lock lasts until
it is removed with tollgate locks rm. A user or role that does not exist yet
gets a warning, and the lock all the same: it holds from its creation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req.TTL = api.Duration(ttl)
			return withLocks(cmd, func(ctx context.Context, a locks.Admin, dir api.Admin) error {
				k, err := a.AddLock(ctx, req)
				if err != nil {
					return err
				}
				if w := unknownLockTarget(ctx, dir, req); w != "" {
					fmt.Fprintln(cmd.ErrOrStderr(), "tollgate: warning:", w)
				}
				until := "until removed"
				if !k.Expires.IsZero() {
					until = "until " + k.Expires.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "lock %s placed on %s, %s\n", k.ID, lockTarget(*k), until)
				return nil
			})
		},
	}
	fl := c.Flags()
	fl.StringVar(&req.TargetUser, "user", "", "lock this user")
	fl.StringVar(&req.TargetRole, "role", "", "lock every holder of this role")
	fl.StringVar(&req.TargetSession, "session", "", "lock this session (its id, from tollgate sessions ls)")
	fl.StringVar(&req.Message, "message", "", "what locked-out clients are told")
	fl.DurationVar(&ttl, "ttl", 0, "how long the lock holds (default: until removed)")
	return c
}

func lockTarget(k api.Lock) string {
	switch {
	case k.TargetUser != "":
		return "user " + k.TargetUser
	case k.TargetRole != "":
		return "role " + k.TargetRole
	}
	return "session " + k.TargetSession
}

func locksLsCmd() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List the locks in force",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withLocks(cmd, func(ctx context.Context, a locks.Admin, _ api.Admin) error {
				ks, err := a.Locks(ctx)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), format, ks, []string{"ID", "TARGET", "MESSAGE", "EXPIRES", "CREATED", "BY"}, func(k api.Lock) []string {
					exp := "never"
					if !k.Expires.IsZero() {
						exp = k.Expires.UTC().Format(time.RFC3339)
					}
					return []string{k.ID, lockTarget(k), k.Message, exp, k.Created.UTC().Format(time.RFC3339), k.CreatedBy}
				})
			})
		},
	}
	c.Flags().StringVar(&format, "format", "text", "text or json")
	return c
}

func locksRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm ID",
		Short: "Remove a lock",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withLocks(cmd, func(ctx context.Context, a locks.Admin, _ api.Admin) error {
				if err := a.RemoveLock(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "lock %s removed\n", args[0])
				return nil
			})
		},
	}
}
