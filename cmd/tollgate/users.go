package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/admin"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
)

// flagIdentity, when set, sends the admin commands (users, roles, tokens,
// db) to the API of the broker named in the identity file instead of the
// local data dir. The identity must hold the editor role.
var flagIdentity string

// adminTimeout bounds one admin command.
const adminTimeout = 2 * time.Minute

func init() {
	root.PersistentFlags().StringVar(&flagIdentity, "identity", os.Getenv("TOLLGATE_IDENTITY"),
		"identity file of an editor: run admin commands against the broker named in it, over its API (or TOLLGATE_IDENTITY)")

	users := &cobra.Command{Use: "users", Short: "Add, list and remove users"}
	users.AddCommand(usersAddCmd(), usersLsCmd(), usersRmCmd(), usersResetMFACmd())
	root.AddCommand(users)

	certIssued = auditSigned
	// `auth sign --format=identity --user=U` without --roles signs the
	// roles and traits the user has in the state.
	stateIdentity = func(user string) (identity.Identity, error) {
		cfg, err := adminConfig()
		if err != nil {
			return identity.Identity{}, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		defer cancel()
		l, err := daemon.Attach(ctx, cfg)
		if err != nil {
			return identity.Identity{}, err
		}
		defer l.Close()
		return l.Admin.IdentityFor(user, nil, nil, nil)
	}
}

// auditSigned records a certificate `tollgate auth sign` issued.
func auditSigned(t ca.Type, certPEM []byte) error {
	cfg, err := adminConfig()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	l, err := daemon.Attach(ctx, cfg)
	if err != nil {
		return fmt.Errorf("record the certificate in the audit trail: %w", err)
	}
	defer l.Close()
	return admin.AuditIssued(ctx, l.Publisher, daemon.LocalActor(), t, certPEM, events.IssueSign, "")
}

// adminConfig is the configuration of the local data dir: --config (or
// TOLLGATE_CONFIG), else the defaults, with --data-dir applied.
func adminConfig() (*config.Config, error) { return startConfig(flagConfig, flagDataDir) }

// withAdmin runs fn with the broker the flags name: the remote one of
// --identity, else the local data dir's.
func withAdmin(cmd *cobra.Command, fn func(ctx context.Context, a api.Admin, proxy string) error) error {
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
		return fn(ctx, c, f.ProxyAddr)
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
	return fn(ctx, l.Admin.As(daemon.LocalActor(), ""), cfg.Proxy.PublicAddr)
}

func usersAddCmd() *cobra.Command {
	var req api.AddUserRequest
	var inviteTTL time.Duration
	c := &cobra.Command{
		Use:   "add NAME --roles=R[,R] [--db-users=U,..] [--db-names=N,..]",
		Short: "Add a user and print a one-time invite to set a password",
		Long: `Add a user with roles and the traits db_users and db_names (which the built-in
access role uses), and print a one-time invite: the exact tg login command that
sets the user's password and logs them in. The invite is shown only once.`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			req.InviteTTL = api.Duration(inviteTTL)
			return withAdmin(cmd, func(ctx context.Context, a api.Admin, _ string) error {
				res, err := a.AddUser(ctx, req)
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "user %s added: roles %s%s\n", res.User.Name, strings.Join(res.User.Roles, ","), traitText(res.User.Traits))
				fmt.Fprintf(w, "invite (single use, valid until %s): %s\n", res.InviteExpires.UTC().Format(time.RFC3339), res.Invite)
				fmt.Fprintf(w, "host CA of the proxy: %s\n", res.HostCAPin)
				fmt.Fprintf(w, "give %s this command; it asks for a new password (at least 15 characters) and logs in:\n\n  %s\n", res.User.Name, res.LoginCommand)
				return nil
			})
		},
	}
	fl := c.Flags()
	fl.StringSliceVar(&req.Roles, "roles", nil, "roles of the user (e.g. access, editor)")
	fl.StringSliceVar(&req.DBUsers, "db-users", nil, "database users the user may log in as: trait db_users ('*' for any)")
	fl.StringSliceVar(&req.DBNames, "db-names", nil, "database names the user may use: trait db_names ('*' for any)")
	fl.DurationVar(&inviteTTL, "invite-ttl", 0, "how long the invite works (default 24h, at most 168h)")
	return c
}

func traitText(t map[string][]string) string {
	if len(t) == 0 {
		return ""
	}
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "; %s %s", k, strings.Join(t[k], ","))
	}
	return b.String()
}

func usersLsCmd() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, func(ctx context.Context, a api.Admin, _ string) error {
				us, err := a.Users(ctx)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), format, us, []string{"NAME", "ROLES", "TRAITS", "PASSWORD", "CREATED"}, func(u api.User) []string {
					pw := "set"
					switch {
					case u.LockedUntil.After(time.Now()):
						pw = "locked until " + u.LockedUntil.UTC().Format(time.RFC3339)
					case !u.PasswordSet && !u.InviteExpires.IsZero():
						pw = "invite pending until " + u.InviteExpires.UTC().Format(time.RFC3339)
					case !u.PasswordSet:
						pw = "none (invite expired)"
					}
					return []string{u.Name, strings.Join(u.Roles, ","), strings.TrimPrefix(traitText(u.Traits), "; "), pw, u.Created.UTC().Format(time.RFC3339)}
				})
			})
		},
	}
	c.Flags().StringVar(&format, "format", "text", "text or json")
	return c
}

func usersRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a user (certificates already issued run until they expire; lock the user to stop them now)",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, func(ctx context.Context, a api.Admin, _ string) error {
				if err := a.RemoveUser(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "user %s removed\n", args[0])
				return nil
			})
		},
	}
}

func usersResetMFACmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reset-mfa NAME",
		Short: "Remove every second factor of a user who lost theirs (they enroll again with tg mfa add)",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, func(ctx context.Context, a api.Admin, _ string) error {
				if err := a.ResetMFA(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "second factors of %s removed: their next login needs none; roles with require_mfa wait until they enroll one again (tg mfa add)\n", args[0])
				return nil
			})
		},
	}
}

// exactArgs wants exactly the named arguments and says which is missing.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < len(names) {
			return fmt.Errorf("%s: missing %s (usage: %s)", cmd.CommandPath(), names[len(args)], cmd.UseLine())
		}
		if len(args) > len(names) {
			return fmt.Errorf("%s: unexpected argument %q (usage: %s)", cmd.CommandPath(), args[len(names)], cmd.UseLine())
		}
		return nil
	}
}

// printList prints items as a table (text) or a JSON array (json).
func printList[T any](w io.Writer, format string, items []T, header []string, row func(T) []string) error {
	switch format {
	case "json":
		if items == nil {
			items = []T{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(items)
	case "text", "":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(header, "\t"))
		for _, it := range items {
			fmt.Fprintln(tw, strings.Join(row(it), "\t"))
		}
		return tw.Flush()
	}
	return errors.New("--format: want text or json, got " + format)
}
