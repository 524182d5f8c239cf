package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/format"
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

// auditFilter is the subject filter for a type and a session.
func auditFilter(typ, sid string) (string, error) {
	if sid != "" {
		if err := events.ValidToken(sid); err != nil {
			return "", fmt.Errorf("--session: %w", err)
		}
	} else {
		sid = "*"
	}
	typ, err := auditTypeFilter(typ)
	if err != nil {
		return "", err
	}
	return "audit.*." + sid + "." + typ, nil
}

// auditTypeFilter turns --type into the type part of a subject filter: a
// registered type as is, a prefix ending in .* (or .>) as prefix.>. Any
// other value would match nothing, so it is refused with the known types.
func auditTypeFilter(typ string) (string, error) {
	if typ == "" || typ == "*" || typ == ">" {
		return ">", nil
	}
	prefix, wild := strings.CutSuffix(typ, ".*")
	if !wild {
		prefix, wild = strings.CutSuffix(typ, ".>")
	}
	for _, tok := range strings.Split(prefix, ".") {
		if err := events.ValidToken(tok); err != nil {
			return "", fmt.Errorf("--type %q is not a dotted event type or a prefix ending in .*: %w", typ, err)
		}
	}
	var known []string
	for _, s := range events.Specs() {
		if wild && strings.HasPrefix(s.Type, prefix+".") || !wild && s.Type == typ {
			if wild {
				return prefix + ".>", nil
			}
			return typ, nil
		}
		known = append(known, s.Type)
	}
	return "", fmt.Errorf("--type %q matches no event type; the types are:\n  %s", typ, strings.Join(known, "\n  "))
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

func auditTail(ctx context.Context, cfg *config.Config, f auditTailFlags, w interface{ Write([]byte) (int, error) }) error {
	switch f.format {
	case "", "json":
	case "ocsf", "cloudevents":
	default:
		return fmt.Errorf("--format: %q is not json, ocsf or cloudevents", f.format)
	}
	filter, err := auditFilter(f.typ, f.session)
	if err != nil {
		return err
	}
	now := time.Now()
	since, err := parseWhen("since", f.since, now)
	if err != nil {
		return err
	}
	until, err := parseWhen("until", f.until, now)
	if err != nil {
		return err
	}
	if !until.IsZero() && f.follow {
		return errors.New("--until and --follow: the one stops where the other waits")
	}
	if !since.IsZero() && !until.IsZero() && until.Before(since) {
		return fmt.Errorf("--until %s is before --since %s", until.Format(time.RFC3339), since.Format(time.RFC3339))
	}
	if f.last < 0 {
		return fmt.Errorf("-n %d: want a count of events", f.last)
	}
	nc, closeNATS, err := adminNATS(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeNATS()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var fm format.Format
	if f.format == "ocsf" || f.format == "cloudevents" {
		// The exporters' transforms, so what is printed is what they send.
		if fm, err = format.New(f.format, format.Options{Requests: exporters.NewRequestResolver(js)}); err != nil {
			return err
		}
	}
	var buf []byte
	cc := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if !since.IsZero() {
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := js.OrderedConsumer(ctx, events.AuditStream, cc)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("no %s stream on %s: has tollgate start run with this configuration?", events.AuditStream, nc.ConnectedUrlRedacted())
		}
		return fmt.Errorf("audit stream: %w", err)
	}
	out := bufio.NewWriterSize(w, 64<<10)
	defer out.Flush()
	// -n holds the last N events until the history is read: the stream
	// cannot be read backwards through a subject filter.
	var ring [][]byte
	next := 0 // where the next event goes once ring is full; the oldest
	ringed := f.last > 0
	flushRing := func() error {
		for i := range ring {
			if _, err := out.Write(ring[(next+i)%len(ring)]); err != nil {
				return err
			}
		}
		ring, ringed = nil, false
		return nil
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	if info.NumPending == 0 {
		if !f.follow {
			return nil
		}
		ringed = false
	}
	// A pull iterator keeps batches in flight: one round trip per batch,
	// not per event.
	it, err := cons.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return fmt.Errorf("audit stream: %w", err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("audit stream: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return err
		}
		if !until.IsZero() && md.Timestamp.After(until) {
			// Stored in time order: nothing later can match.
			return flushRing()
		}
		data := msg.Data()
		if fm != nil {
			env, err := format.Scan(data)
			if err == nil {
				buf, err = fm.Append(buf[:0], &env, data)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "tollgate: skipping an event of %s that cannot be printed as %s: %v\n", msg.Subject(), f.format, err)
				data = nil
			} else {
				data = buf
			}
		}
		if data != nil && ringed {
			line := append(append([]byte(nil), data...), '\n')
			if len(ring) < f.last {
				ring = append(ring, line)
			} else {
				ring[next] = line
				next = (next + 1) % f.last
			}
		} else if data != nil {
			if _, err := out.Write(append(data, '\n')); err != nil {
				return err
			}
		}
		if md.NumPending == 0 {
			if err := flushRing(); err != nil {
				return err
			}
			// Caught up: done, or flush before waiting for more so a
			// reader of --follow sees events as they come.
			if !f.follow {
				return nil
			}
			if err := out.Flush(); err != nil {
				return err
			}
		}
	}
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
