package faults

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/test/harness"
)

// statements is a PostgreSQL statement log written by the test: the
// ledger's rules are about what it compares, not about reading the log.
type statements []harness.PostgresStatement

func (s *statements) StatementLogEntries() ([]harness.PostgresStatement, error) { return *s, nil }

func (s *statements) add(user, kind string, texts ...string) {
	for _, t := range texts {
		*s = append(*s, harness.PostgresStatement{User: user, Kind: kind, Text: t})
	}
}

// ledgerStore stores events in AUDIT as frames or on their own.
type ledgerStore struct {
	t    *testing.T
	ctx  context.Context
	js   jetstream.JetStream
	fseq uint64
	prev string
}

func (s *ledgerStore) frame(evs ...[]byte) {
	s.t.Helper()
	if s.prev == "" {
		s.prev = events.FrameGenesis("r1")
	}
	h := events.FrameHeader{ID: events.NewID(), Src: "h1", Run: "r1", FSeq: s.fseq, Prev: s.prev}
	data, hash, err := events.EncodeFrame(nil, h, evs, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	s.fseq, s.prev = s.fseq+1, hash
	s.publish("audit.ci."+events.FrameSubject+".h1", h.ID, data)
}

func (s *ledgerStore) single(ev []byte) {
	s.t.Helper()
	var h struct{ ID, Type, SID string }
	if err := json.Unmarshal(ev, &h); err != nil {
		s.t.Fatal(err)
	}
	s.publish("audit.ci."+h.SID+"."+h.Type, h.ID, ev)
}

func (s *ledgerStore) publish(subject, id string, data []byte) {
	s.t.Helper()
	m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := s.js.PublishMsg(s.ctx, m); err != nil {
		s.t.Fatal(err)
	}
}

// query and result encode session events as the agent stores them.
func query(t *testing.T, sid string, ei uint64, q string) []byte {
	ev := &events.Query{Session: events.Session{SID: sid, EI: ei}, Database: events.Database{User: DBUser}, Query: q}
	return encodeEvent(t, ev)
}

func result(t *testing.T, sid string, ei uint64, errText string) []byte {
	ev := &events.Result{Session: events.Session{SID: sid, EI: ei}, Database: events.Database{User: DBUser},
		Status: events.Status{Success: errText == "", Error: errText}}
	return encodeEvent(t, ev)
}

func encodeEvent(t *testing.T, ev events.Event) []byte {
	t.Helper()
	if err := events.Stamp(ev, "ci"); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The ledger counts events, not messages: frames holding several sessions
// and single events are split, and the campaign's invariants (statements
// without event, ei gaps, ids stored twice, delivered = stored) are
// counted per event.
func TestLedgerUnitCountsEventsOfFrames(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(t.TempDir(), "nats"), Listen: natsserver.InProcessOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	s := &ledgerStore{t: t, ctx: ctx, js: js}
	pg := &statements{}
	export := filepath.Join(t.TempDir(), "export.jsonl")
	l := &Ledger{JS: js, PG: pg, ExportFile: export}

	q1 := query(t, "s1", 0, "SELECT 1")
	s.frame(q1, result(t, "s1", 1, ""), query(t, "s2", 0, "SELECT 2"),
		query(t, "s1", 2, "SELECT 3"), result(t, "s1", 3, "refused; the statement was "+refusalMark))
	r2 := result(t, "s2", 1, "")
	s.single(r2)
	// s1 goes on at ei 5: ei 4 is missing. q1 is stored a second time, in
	// another frame.
	q4 := query(t, "s1", 5, "SELECT 4")
	s.frame(q4, q1)
	pg.add(DBUser, "statement", "SELECT 1", "SELECT 2", "SELECT 4", "SELECT 5")
	pg.add("postgres", "statement", "SELECT pg_reload_conf()")
	pg.add(DBUser, "rejected", "SELEC 1")
	lines := []string{string(q1), string(r2), string(q4), string(q4)}
	if err := os.WriteFile(export, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	now, _, err := l.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := Totals{Statements: 4, Events: 8, DuplicateIDs: 1, Missing: 1, Refused: 1, Gaps: 1, Delivered: 3, ExportDuplicates: 1}
	if now != want {
		t.Fatalf("totals\n got %+v\nwant %+v", now, want)
	}
	if l.Seq() != 3 {
		t.Fatalf("read up to sequence %d, want 3", l.Seq())
	}

	// What comes after is counted once, in the delta.
	q6, r6 := query(t, "s2", 2, "SELECT 6"), result(t, "s2", 3, "")
	s.frame(q6, r6)
	pg.add(DBUser, "statement", "SELECT 6")
	now, delta, err := l.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Totals{Statements: 1, Events: 2}); delta != want {
		t.Fatalf("delta\n got %+v\nwant %+v", delta, want)
	}
	if now.Events != 10 || now.Missing != 1 || now.Gaps != 1 {
		t.Fatalf("totals after the second check %+v", now)
	}

	// Delivered = stored once the exporter wrote every stored event.
	var rest []string
	err = events.SplitEvents(mustGet(t, ctx, js, 1), func(ev []byte) error {
		rest = append(rest, string(ev))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rest = append(rest, string(q6), string(r6))
	f, err := os.OpenFile(export, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(strings.Join(rest, "\n") + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := l.WaitDelivered(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	now, _, err = l.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stored := now.Events - now.DuplicateIDs; now.Delivered != stored {
		t.Fatalf("delivered %d of %d stored ids", now.Delivered, stored)
	}
}

func mustGet(t *testing.T, ctx context.Context, js jetstream.JetStream, seq uint64) []byte {
	t.Helper()
	st, err := js.Stream(ctx, events.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	return m.Data
}
