package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/test/harness"
)

// refusalMark is in the error of the result the agent records for a
// statement it refused (agent/postgres: "...; the statement was not sent
// to the database").
const refusalMark = "not sent to the database"

// Ledger compares the three records of what happened: the database's
// statement log, the AUDIT stream and the exporter's file. It reads each
// incrementally, so a campaign checks after every fault what came since
// the last check, and keeps totals for the whole run.
type Ledger struct {
	JS jetstream.JetStream
	// Stream is read (AUDIT).
	Stream string
	// PG is the PostgreSQL server whose statement log is compared.
	PG StatementLog
	// MariaDB, when set, is compared too: MyUser's statements in its
	// general log.
	MariaDB *harness.MariaDBServer
	// ExportFile is the file exporter's output; empty when none runs.
	ExportFile string

	lastSeq    uint64
	ids        map[string]int
	sessions   map[string][]sessEv
	exportOff  int64
	exportPart []byte
	delivered  map[string]int
	// undelivered counts stored ids the exporter has not written yet.
	undelivered int

	prev Totals
}

type sessEv struct {
	ei      uint64
	kind    byte // 'q' statement, 'r' result, 'o' other
	query   string
	refused bool
}

// Totals are counts since the ledger began.
type Totals struct {
	// Statements of DBUser in the database's log.
	Statements int
	// MyStatements are MyUser's statements in MariaDB's general log (Query
	// and Execute commands), MyMissing those without an event.
	MyStatements, MyMissing int
	// Events stored in the stream, and the ids stored more than once.
	Events, DuplicateIDs int
	// Missing are statements in the database log without an event.
	Missing int
	// Refused are statements the agent refused (a refusal result).
	Refused int
	// Gaps are event indexes (ei) missing inside sessions.
	Gaps int
	// Delivered are stored events the exporter wrote at least once;
	// ExportDuplicates the extra copies it wrote (at-least-once).
	Delivered, ExportDuplicates int
}

// Sub is t minus u, field by field.
func (t Totals) Sub(u Totals) Totals {
	return Totals{Statements: t.Statements - u.Statements, Events: t.Events - u.Events,
		DuplicateIDs: t.DuplicateIDs - u.DuplicateIDs, Missing: t.Missing - u.Missing, Refused: t.Refused - u.Refused,
		Gaps: t.Gaps - u.Gaps, MyStatements: t.MyStatements - u.MyStatements, MyMissing: t.MyMissing - u.MyMissing, Delivered: t.Delivered - u.Delivered, ExportDuplicates: t.ExportDuplicates - u.ExportDuplicates}
}

// StatementLog is what the ledger reads of PostgreSQL: every statement it
// logged (harness.PostgresServer).
type StatementLog interface {
	StatementLogEntries() ([]harness.PostgresStatement, error)
}

// event is what the ledger reads of a stored event.
type event struct {
	ID     string  `json:"id"`
	Type   string  `json:"type"`
	SID    string  `json:"sid"`
	EI     *uint64 `json:"ei"`
	DBUser string  `json:"db_user"`
	Query  string  `json:"db_query"`
	Error  string  `json:"error"`
}

// Check reads what is new and returns the totals and what changed since
// the previous Check.
func (l *Ledger) Check(ctx context.Context) (now, delta Totals, err error) {
	if err := l.readStream(ctx); err != nil {
		return Totals{}, Totals{}, err
	}
	if err := l.readExport(); err != nil {
		return Totals{}, Totals{}, err
	}
	now, err = l.totals()
	if err != nil {
		return Totals{}, Totals{}, err
	}
	delta = now.Sub(l.prev)
	l.prev = now
	return now, delta, nil
}

// WaitDelivered waits until the exporter wrote every stored event (at
// most timeout) and returns how long that took.
func (l *Ledger) WaitDelivered(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		if err := l.readStream(ctx); err != nil {
			return 0, err
		}
		if err := l.readExport(); err != nil {
			return 0, err
		}
		missing := l.undelivered
		if missing == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("after %s the exporter has not written %d of %d stored events", timeout, missing, len(l.ids))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Seq is the last stream sequence read.
func (l *Ledger) Seq() uint64 { return l.lastSeq }

func (l *Ledger) readStream(ctx context.Context) error {
	if l.ids == nil {
		l.ids, l.sessions, l.delivered = map[string]int{}, map[string][]sessEv{}, map[string]int{}
	}
	name := l.Stream
	if name == "" {
		name = "AUDIT"
	}
	var st jetstream.Stream
	var info *jetstream.StreamInfo
	for try := 0; ; try++ {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		if st, err = l.JS.Stream(ictx, name); err == nil {
			info, err = st.Info(ictx)
		}
		cancel()
		if err == nil {
			break
		}
		if try == 20 {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	last := info.State.LastSeq
	if last <= l.lastSeq {
		return nil
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: l.lastSeq + 1})
	if err != nil {
		return err
	}
	it, err := c.Messages(jetstream.PullMaxMessages(2000))
	if err != nil {
		return err
	}
	defer it.Stop()
	for l.lastSeq < last {
		nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := nextMsg(nctx, it)
		cancel()
		if err != nil {
			return fmt.Errorf("reading %s at %d of %d: %w", name, l.lastSeq, last, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		l.lastSeq = md.Sequence.Stream
		// A message is a frame of many events or one event on its own;
		// every count is of events.
		if err := events.SplitEvents(m.Data(), l.add); err != nil {
			return fmt.Errorf("%s seq %d: %w", name, l.lastSeq, err)
		}
	}
	return nil
}

// add counts one stored event.
func (l *Ledger) add(data []byte) error {
	var ev event
	if err := json.Unmarshal(data, &ev); err != nil {
		return err
	}
	if l.ids[ev.ID] == 0 && l.delivered[ev.ID] == 0 {
		l.undelivered++
	}
	l.ids[ev.ID]++
	if ev.SID == "" || ev.EI == nil {
		return nil
	}
	se := sessEv{ei: *ev.EI, kind: 'o'}
	switch ev.Type {
	case "db.session.query":
		switch ev.DBUser {
		case DBUser:
			se.kind, se.query = 'q', ev.Query
		case MyUser:
			se.kind, se.query = 'q', myKey(ev.Query)
		}
	case "db.session.result":
		se.kind, se.refused = 'r', strings.Contains(ev.Error, refusalMark)
	}
	l.sessions[ev.SID] = append(l.sessions[ev.SID], se)
	return nil
}

// myKey is how a MariaDB statement is counted: apart from PostgreSQL's,
// whatever the whitespace around it.
func myKey(q string) string { return "mysql\x00" + strings.TrimSpace(q) }

// nextMsg is it.Next bounded by ctx.
func nextMsg(ctx context.Context, it jetstream.MessagesContext) (jetstream.Msg, error) {
	type res struct {
		m   jetstream.Msg
		err error
	}
	ch := make(chan res, 1)
	go func() {
		m, err := it.Next()
		ch <- res{m, err}
	}()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-ctx.Done():
		it.Stop()
		return nil, ctx.Err()
	}
}

func (l *Ledger) readExport() error {
	if l.ExportFile == "" {
		return nil
	}
	f, err := os.Open(l.ExportFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(l.exportOff, io.SeekStart); err != nil {
		return err
	}
	b, err := io.ReadAll(bufio.NewReader(f))
	if err != nil {
		return err
	}
	l.exportOff += int64(len(b))
	b = append(l.exportPart, b...)
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		var ev struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(b[:i], &ev); err != nil {
			return fmt.Errorf("exporter file %s: %w", l.ExportFile, err)
		}
		if l.delivered[ev.ID] == 0 && l.ids[ev.ID] > 0 {
			l.undelivered--
		}
		l.delivered[ev.ID]++
		b = b[i+1:]
	}
	l.exportPart = append([]byte(nil), b...)
	return nil
}

// totals pairs every session's statements with their results (a refused
// statement is followed by its refusal), then takes every statement of
// the database log off the statements the agent forwarded: one left over
// has no event.
func (l *Ledger) totals() (Totals, error) {
	var t Totals
	for _, n := range l.ids {
		t.Events += n
		if n > 1 {
			t.DuplicateIDs++
		}
	}
	forwarded := map[string]int{}
	for _, evs := range l.sessions {
		sort.Slice(evs, func(i, j int) bool { return evs[i].ei < evs[j].ei })
		var waiting []string
		for i, e := range evs {
			if i > 0 && e.ei > evs[i-1].ei+1 {
				t.Gaps += int(e.ei - evs[i-1].ei - 1)
			}
			if i == 0 && e.ei > 0 {
				t.Gaps += int(e.ei)
			}
			switch e.kind {
			case 'q':
				waiting = append(waiting, e.query)
			case 'r':
				if len(waiting) == 0 {
					continue
				}
				q := waiting[0]
				waiting = waiting[1:]
				if e.refused {
					t.Refused++
				} else {
					forwarded[q]++
				}
			}
		}
		// Statements whose results were not stored (the agent died) may
		// have reached the database: they count as forwarded.
		for _, q := range waiting {
			forwarded[q]++
		}
	}
	entries, err := l.PG.StatementLogEntries()
	if err != nil {
		return Totals{}, err
	}
	for _, e := range entries {
		if e.User != DBUser || e.Kind != "statement" {
			continue
		}
		t.Statements++
		if forwarded[e.Text] > 0 {
			forwarded[e.Text]--
		} else {
			t.Missing++
		}
	}
	if l.MariaDB != nil {
		logged, err := l.MariaDB.GeneralLogEntries()
		if err != nil {
			return Totals{}, err
		}
		for _, e := range logged {
			if !strings.HasPrefix(e.User, MyUser+"@") {
				continue
			}
			var key string
			switch e.Command {
			case "Query":
				key = myKey(e.Argument)
			case "Execute":
				// The load sends text statements; an execution would
				// show up here unmatched.
				key = myKey("EXECUTE " + e.Argument)
			default:
				continue
			}
			t.MyStatements++
			if forwarded[key] > 0 {
				forwarded[key]--
			} else {
				t.MyMissing++
			}
		}
	}
	for id, n := range l.delivered {
		if l.ids[id] > 0 {
			t.Delivered++
		}
		t.ExportDuplicates += n - 1
	}
	return t, nil
}
