package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/format"
)

// tailMatch is what --type and --session select. It is applied to each
// event once a message is split: a frame holds events of many types and
// sessions under one subject (audit.<cluster>.frame.<src>), so no subject
// filter can select them and the tail reads every message.
type tailMatch struct {
	// typ is an exact type, or with prefix set the prefix of the types
	// (db.session. for db.session.*).
	typ    string
	prefix bool
	// sid is a session id; events.NoSession selects the events outside
	// any session, as the subject token did.
	sid string
}

func (m tailMatch) all() bool { return m.typ == "" && m.sid == "" }

func (m tailMatch) match(env *format.Envelope) bool {
	switch {
	case m.typ == "":
	case m.prefix && !strings.HasPrefix(env.Type, m.typ):
		return false
	case !m.prefix && env.Type != m.typ:
		return false
	}
	switch m.sid {
	case "":
		return true
	case events.NoSession:
		return env.SID == ""
	}
	return env.SID == m.sid
}

// newTailMatch checks --type and --session.
func newTailMatch(typ, sid string) (tailMatch, error) {
	var m tailMatch
	if sid != "" {
		if err := events.ValidToken(sid); err != nil {
			return m, fmt.Errorf("--session: %w", err)
		}
		m.sid = sid
	}
	var err error
	m.typ, m.prefix, err = auditTypeMatch(typ)
	return m, err
}

// auditTypeMatch reads --type: a registered type as is, a prefix ending in
// .* (or .>) as the prefix with its dot. Any other value would match
// nothing, so it is refused with the known types.
func auditTypeMatch(typ string) (string, bool, error) {
	if typ == "" || typ == "*" || typ == ">" {
		return "", false, nil
	}
	prefix, wild := strings.CutSuffix(typ, ".*")
	if !wild {
		prefix, wild = strings.CutSuffix(typ, ".>")
	}
	for _, tok := range strings.Split(prefix, ".") {
		if err := events.ValidToken(tok); err != nil {
			return "", false, fmt.Errorf("--type %q is not a dotted event type or a prefix ending in .*: %w", typ, err)
		}
	}
	var known []string
	for _, s := range events.Specs() {
		if wild && strings.HasPrefix(s.Type, prefix+".") {
			return prefix + ".", true, nil
		}
		if !wild && s.Type == typ {
			return typ, false, nil
		}
		known = append(known, s.Type)
	}
	return "", false, fmt.Errorf("--type %q matches no event type; the types are:\n  %s", typ, strings.Join(known, "\n  "))
}

// tailPrinter turns one AUDIT message into the lines the tail prints: one
// per matching event, as stored or in --format.
type tailPrinter struct {
	match tailMatch
	fm    format.Format
	name  string // the format's name, for warnings
	buf   []byte
	warn  io.Writer
}

// each calls emit with the line of every matching event of a message
// (frame or single event), without its newline; the line is only valid
// during the call.
func (p *tailPrinter) each(subject string, seq uint64, data []byte, emit func(line []byte) error) error {
	err := events.SplitEvents(data, func(ev []byte) error {
		if p.fm == nil && p.match.all() {
			return emit(ev)
		}
		env, err := format.Scan(ev)
		if err != nil {
			fmt.Fprintf(p.warn, "tollgate: skipping an event of %s (sequence %d) that is not an event: %v\n", subject, seq, err)
			return nil
		}
		if !p.match.match(&env) {
			return nil
		}
		if p.fm == nil {
			return emit(ev)
		}
		if p.buf, err = p.fm.Append(p.buf[:0], &env, ev); err != nil {
			fmt.Fprintf(p.warn, "tollgate: skipping an event of %s (sequence %d) that cannot be printed as %s: %v\n", subject, seq, p.name, err)
			return nil
		}
		return emit(p.buf)
	})
	var werr writeError
	if errors.As(err, &werr) {
		return werr.error
	}
	if err != nil {
		// A frame that does not split is no event to print; the
		// others still are.
		fmt.Fprintf(p.warn, "tollgate: skipping message %d of %s: %v\n", seq, subject, err)
	}
	return nil
}

// writeError is an error of the output, which ends the tail, as opposed
// to a message that cannot be read, which is skipped.
type writeError struct{ error }

func auditTail(ctx context.Context, cfg *config.Config, f auditTailFlags, w io.Writer) error {
	switch f.format {
	case "", "json":
	case "ocsf", "cloudevents":
	default:
		return fmt.Errorf("--format: %q is not json, ocsf or cloudevents", f.format)
	}
	match, err := newTailMatch(f.typ, f.session)
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
	p := &tailPrinter{match: match, name: f.format, warn: os.Stderr}
	if f.format == "ocsf" || f.format == "cloudevents" {
		// The exporters' transforms, so what is printed is what they send.
		if p.fm, err = format.New(f.format, format.Options{Requests: exporters.NewRequestResolver(js)}); err != nil {
			return err
		}
	}
	st, err := js.Stream(ctx, events.AuditStream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("no %s stream on %s: has tollgate start run with this configuration?", events.AuditStream, nc.ConnectedUrlRedacted())
		}
		return fmt.Errorf("audit stream: %w", err)
	}
	out := bufio.NewWriterSize(w, 64<<10)
	defer out.Flush()
	write := func(line []byte) error {
		if _, err := out.Write(line); err != nil {
			return writeError{err}
		}
		if err := out.WriteByte('\n'); err != nil {
			return writeError{err}
		}
		return nil
	}
	cc := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if f.last > 0 {
		info, err := st.Info(ctx)
		if err != nil {
			return fmt.Errorf("audit stream: %w", err)
		}
		last := info.State.LastSeq
		if info.State.Msgs > 0 {
			lines, err := lastEvents(ctx, st, p, tailWindow{first: info.State.FirstSeq, last: last, since: since, until: until}, f.last)
			if err != nil {
				return err
			}
			for _, l := range lines {
				if err := write(l); err != nil {
					return err
				}
			}
		}
		if !f.follow {
			return nil
		}
		if err := out.Flush(); err != nil {
			return err
		}
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, last+1
	} else if !since.IsZero() {
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := st.OrderedConsumer(ctx, cc)
	if err != nil {
		return fmt.Errorf("audit stream: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	if info.NumPending == 0 && !f.follow {
		return nil
	}
	// A pull iterator keeps batches in flight: one round trip per batch,
	// not per message.
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
			return nil
		}
		if err := p.each(msg.Subject(), md.Sequence.Stream, msg.Data(), write); err != nil {
			return err
		}
		if md.NumPending == 0 {
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

// tailWindow is the part of the stream -n looks at: sequences first to
// last, stored from since to until (zero: unbounded).
type tailWindow struct {
	first, last  uint64
	since, until time.Time
}

// lastEvents is the lines of the last n matching events of the window,
// oldest first. It walks the stream back from its end a chunk at a time,
// each chunk read forward and twice the size of the one after it, until
// it holds n events or reaches the start of the window: a frame holds
// many events, so how many messages n events take is only known by
// reading them, and reading from the end costs the size of the answer
// rather than of the history.
func lastEvents(ctx context.Context, st jetstream.Stream, p *tailPrinter, win tailWindow, n int) ([][]byte, error) {
	hi := win.last
	if !win.until.IsZero() {
		hi = lastStoredBy(ctx, st, win.first, win.last, win.until)
	}
	size := uint64(min(max(n, 16), 1024))
	var found [][]byte
	for hi >= win.first && hi > 0 && len(found) < n {
		lo := win.first
		if hi-lo+1 > size {
			lo = hi - size + 1
		}
		var chunk [][]byte
		older, err := readRange(ctx, st, lo, hi, func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
			if !win.until.IsZero() && md.Timestamp.After(win.until) {
				return nil
			}
			return p.each(m.Subject(), md.Sequence.Stream, m.Data(), func(line []byte) error {
				chunk = append(chunk, append([]byte(nil), line...))
				return nil
			})
		}, win.since)
		if err != nil {
			return nil, err
		}
		found = append(chunk, found...)
		if older || lo == win.first {
			break
		}
		hi = lo - 1
		size = min(2*size, 1<<16)
	}
	if len(found) > n {
		found = found[len(found)-n:]
	}
	return found, nil
}

// readRange calls fn with each message stored at sequences lo to hi, in
// order, skipping those stored before since; it reports whether it saw
// one, as then nothing earlier is in the window either.
func readRange(ctx context.Context, st jetstream.Stream, lo, hi uint64, fn func(jetstream.Msg, *jetstream.MsgMetadata) error, since time.Time) (older bool, err error) {
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: lo})
	if err != nil {
		return false, fmt.Errorf("audit stream: %w", err)
	}
	// Nothing stored from lo on (the range was removed): waiting for a
	// message would wait for a new one.
	if info, err := cons.Info(ctx); err != nil {
		return false, fmt.Errorf("audit stream: %w", err)
	} else if info.NumPending == 0 {
		return false, nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(int(min(hi-lo+1, 1000))))
	if err != nil {
		return false, fmt.Errorf("audit stream: %w", err)
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return false, fmt.Errorf("audit stream at %d: %w", lo, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return false, err
		}
		seq := md.Sequence.Stream
		if seq > hi {
			return older, nil
		}
		if !since.IsZero() && md.Timestamp.Before(since) {
			older = true
		} else if err := fn(m, md); err != nil {
			return false, err
		}
		if seq == hi || md.NumPending == 0 {
			return older, nil
		}
	}
}

// lastStoredBy is the last sequence from first to last stored by t, found
// by bisection since the stream stores in time order; 0 when none is.
// Where a sequence cannot be read it answers last, and the walk back skips
// what was stored after t itself.
func lastStoredBy(ctx context.Context, st jetstream.Stream, first, last uint64, t time.Time) uint64 {
	lo, hi := first, last // the answer is in [lo-1, hi]
	for lo <= hi {
		mid := lo + (hi-lo)/2
		m, err := st.GetMsg(ctx, mid)
		if err != nil {
			return last
		}
		if m.Time.After(t) {
			hi = mid - 1
		} else {
			lo = mid + 1
		}
	}
	return hi
}
