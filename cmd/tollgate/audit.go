package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

type auditTailFlags struct {
	follow  bool
	typ     string
	session string
	format  string
	since   string
	until   string
	last    int
}

// auditCmd is `tollgate audit`; its subcommands add themselves.
var auditCmd = &cobra.Command{Use: "audit", Short: "Read and verify the audit stream"}

func init() {
	audit := auditCmd
	var f auditTailFlags
	tail := &cobra.Command{
		Use:   "tail [--follow] [--since=T] [--until=T] [-n N] [--type=T] [--session=SID] [--format=json|ocsf|cloudevents]",
		Short: "Print stored audit events, oldest first, one JSON object per line",
		Long: `Print the audit events stored in the AUDIT stream that match, oldest first,
one JSON object per line, and exit; with --follow, keep printing new events
until interrupted. --type takes a dotted event type (db.session.query) or a
prefix of types ending in .* (db.session.*), --session a session id.
--since and --until take an RFC 3339 time or a duration meaning that long
ago (15m, 2h); they bound the time the event was stored. -n N prints only
the last N matching events (then, with --follow, the new ones).
--format=ocsf and --format=cloudevents print each event as the exporters
deliver it in that format (schemas/ocsf.md).

The command reads the NATS server of the configuration: nats.urls, else the
embedded server of a running daemon at nats.embedded.listen, else (no daemon
running on the data dir) the data dir's store opened in this process.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := startConfig(flagConfig, flagDataDir)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return auditTail(ctx, cfg, f, cmd.OutOrStdout())
		},
	}
	fl := tail.Flags()
	fl.BoolVarP(&f.follow, "follow", "f", false, "keep printing events as they are stored")
	fl.StringVar(&f.typ, "type", "", "only events of this type (db.session.query) or prefix (db.session.*)")
	fl.StringVar(&f.since, "since", "", "only events stored from this time: RFC 3339, or a duration ago (1h)")
	fl.StringVar(&f.until, "until", "", "only events stored up to this time: RFC 3339, or a duration ago (10m)")
	fl.IntVarP(&f.last, "lines", "n", 0, "only the last N matching events")
	fl.StringVar(&f.session, "session", "", "only events of this session id")
	fl.StringVar(&f.format, "format", "json", "output format: json (as stored), ocsf or cloudevents")
	audit.AddCommand(tail)
	root.AddCommand(audit)
}

// parseWhen reads --since and --until: an RFC 3339 time, or a duration
// before now.
func parseWhen(flag, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("--%s %q: want an RFC 3339 time (2026-01-02T15:04:05Z) or a duration ago (90m)", flag, v)
	}
	return now.Add(-d), nil
}

// adminNATS connects a read-only admin command to the configuration's
// NATS: the external cluster, else a running daemon's embedded server,
// else an in-process server on the data dir's store, held under the
// broker's lock so a daemon starting meanwhile waits.
func adminNATS(ctx context.Context, cfg *config.Config) (*nats.Conn, func(), error) {
	if len(cfg.NATS.URLs) > 0 {
		nc, err := natsserver.Connect(cfg.NATS, natsserver.Auditor)
		if err != nil {
			return nil, nil, err
		}
		return nc, nc.Close, nil
	}
	listen := cfg.NATS.Embedded.Listen
	if listen != "" && listen != natsserver.InProcessOnly {
		nc, err := natsserver.DialEmbedded(cfg, natsserver.Auditor, nats.Name("tollgate-audit"))
		if err == nil {
			return nc, nc.Close, nil
		}
	}
	if _, err := os.Stat(cfg.DataDir); err != nil {
		return nil, nil, fmt.Errorf("no tollgate daemon reachable at nats.embedded.listen %q and no data dir: %w", listen, err)
	}
	unlock, err := lockBroker(cfg.DataDir)
	if err != nil {
		return nil, nil, fmt.Errorf("a tollgate daemon holds data dir %s but its NATS server is not reachable at nats.embedded.listen %q: %w", cfg.DataDir, listen, err)
	}
	o, err := natsserver.FromConfig(cfg)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	o.Listen = natsserver.InProcessOnly
	srv, err := natsserver.Start(o)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	nc, err := srv.ConnectAs(natsserver.Auditor)
	if err != nil {
		srv.Shutdown()
		unlock()
		return nil, nil, err
	}
	if err := srv.WaitJetStream(ctx); err != nil {
		nc.Close()
		srv.Shutdown()
		unlock()
		return nil, nil, err
	}
	return nc, func() { nc.Close(); srv.Shutdown(); unlock() }, nil
}

// lockBroker takes, without waiting, the lock a running broker holds on
// its data dir (<data_dir>/broker.lock, see broker/daemon).
func lockBroker(dataDir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dataDir, "broker.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
