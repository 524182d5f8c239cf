package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/sessions"
)

func init() {
	c := &cobra.Command{Use: "sessions", Short: "Live and past database sessions, and their replay"}
	c.AddCommand(sessionsLsCmd(), sessionsReplayCmd())
	root.AddCommand(c)
}

// sessionSource reads sessions from the local data dir's AUDIT stream or
// from a remote broker's API (--identity).
type sessionSource struct {
	local  *daemon.Local
	remote *api.Client
}

func (s sessionSource) list(ctx context.Context, f sessions.Filter) ([]sessions.Session, error) {
	if s.remote != nil {
		var out []sessions.Session
		return out, s.remote.Sessions(ctx, f.LiveOnly, f.User, f.Database, &out)
	}
	return sessions.List(ctx, s.local.JS, f)
}

func (s sessionSource) load(ctx context.Context, sid string) (*sessions.Timeline, error) {
	if s.remote != nil {
		var out sessions.Timeline
		return &out, s.remote.SessionTimeline(ctx, sid, &out)
	}
	return sessions.Load(ctx, s.local.JS, sid)
}

func withAudit(cmd *cobra.Command, fn func(ctx context.Context, src sessionSource) error) error {
	return withBroker(cmd, func(ctx context.Context, l *daemon.Local, remote *api.Client) error {
		return fn(ctx, sessionSource{local: l, remote: remote})
	})
}

func sessionsLsCmd() *cobra.Command {
	var f sessions.Filter
	var format string
	c := &cobra.Command{
		Use:   "ls [--live] [--user=U] [--db=NAME]",
		Short: "List sessions, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAudit(cmd, func(ctx context.Context, src sessionSource) error {
				ss, err := src.list(ctx, f)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), format, ss,
					[]string{"SID", "USER", "DATABASE", "DB_USER", "DB_NAME", "START", "END", "DURATION", "STATEMENTS", "ROWS", "ERRORS", "END REASON"},
					func(s sessions.Session) []string {
						end, dur := "live", "-"
						if !s.End.IsZero() {
							end = s.End.UTC().Format(time.RFC3339)
							dur = s.Duration.Round(time.Millisecond).String()
						}
						reason := s.EndReason
						if s.Denied {
							reason = "denied: " + s.Error
						}
						return []string{s.SID, s.User, s.Database, s.DBUser, s.DBName, s.Start.UTC().Format(time.RFC3339), end, dur,
							fmt.Sprint(s.Statements), fmt.Sprint(s.Rows), fmt.Sprint(s.Errors), reason}
					})
			})
		},
	}
	fl := c.Flags()
	fl.BoolVar(&f.LiveOnly, "live", false, "only sessions that have not ended")
	fl.StringVar(&f.User, "user", "", "only sessions of this Tollgate user")
	fl.StringVar(&f.Database, "db", "", "only sessions on this database")
	fl.StringVar(&format, "format", "text", "text or json")
	return c
}

func sessionsReplayCmd() *cobra.Command {
	var (
		format, target, pace, progress string
		execute                        bool
	)
	c := &cobra.Command{
		Use:   "replay SID [--format=text|json] [--execute --target=DSN [--pace=recorded|fast]]",
		Short: "Show a session as a timeline, or run its statements again on another database",
		Long: `Show a recorded session event by event: time since its start, each statement
with its parameters, and what the database answered. Only the session's own
events are read.

With --execute the session's statements run again, in order, on the database
of --target (a PostgreSQL DSN, or for MySQL sessions a go-sql-driver DSN
such as user@tcp(host:3306)/db?tls=true), as fast as possible or at the recorded pace,
and every statement whose results differ (count, success, command tag, rows,
error code) is reported. A progress bar is drawn on a terminal.`,
		Args: exactArgs("SID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return errors.New("--format: want text or json, got " + format)
			}
			if !execute && (target != "" || cmd.Flags().Changed("pace")) {
				return errors.New("--target and --pace go with --execute")
			}
			if execute && target == "" {
				return errors.New("--execute needs --target=DSN: the database to run the statements on")
			}
			return withAudit(cmd, func(ctx context.Context, src sessionSource) error {
				t, err := src.load(ctx, args[0])
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if !execute {
					if format == "json" {
						return writeJSON(out, t)
					}
					return t.WriteText(out)
				}
				var bar io.Writer
				switch progress {
				case "always":
					bar = cmd.ErrOrStderr()
				case "auto":
					if term.IsTerminal(int(os.Stderr.Fd())) {
						bar = cmd.ErrOrStderr()
					}
				case "never":
				default:
					return errors.New("--progress: want auto, always or never, got " + progress)
				}
				// The replay may outlast the admin timeout of one command.
				rctx := context.WithoutCancel(ctx)
				rep, err := sessions.Execute(rctx, t, sessions.ExecOptions{Target: target, Pace: pace, Progress: bar})
				if err != nil {
					return err
				}
				if format == "json" {
					return writeJSON(out, rep)
				}
				return rep.WriteText(out)
			})
		},
	}
	fl := c.Flags()
	fl.StringVar(&format, "format", "text", "text or json")
	fl.BoolVar(&execute, "execute", false, "run the statements again on --target and report differences")
	fl.StringVar(&target, "target", "", "DSN of the database to run the statements on")
	fl.StringVar(&pace, "pace", sessions.PaceFast, "recorded (wait as the session did) or fast")
	fl.StringVar(&progress, "progress", "auto", "progress bar: auto (on a terminal), always or never")
	return c
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
