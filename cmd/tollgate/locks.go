package main

import (
	"context"
	"fmt"
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

func withLocks(cmd *cobra.Command, fn func(ctx context.Context, a locks.Admin) error) error {
	return withBroker(cmd, func(ctx context.Context, l *daemon.Local, remote *api.Client) error {
		if remote != nil {
			return fn(ctx, remote)
		}
		return fn(ctx, locks.Local{Store: l.Store, By: daemon.LocalActor()})
	})
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
it is removed with tollgate locks rm.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req.TTL = api.Duration(ttl)
			return withLocks(cmd, func(ctx context.Context, a locks.Admin) error {
				k, err := a.AddLock(ctx, req)
				if err != nil {
					return err
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
			return withLocks(cmd, func(ctx context.Context, a locks.Admin) error {
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
			return withLocks(cmd, func(ctx context.Context, a locks.Admin) error {
				if err := a.RemoveLock(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "lock %s removed\n", args[0])
				return nil
			})
		},
	}
}
