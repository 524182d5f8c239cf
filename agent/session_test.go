package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
)

// fakeRecorder keeps what it stores and fails while down.
type fakeRecorder struct {
	mu      sync.Mutex
	down    bool
	batches [][]string // ids per PublishBatch call that succeeded
	stored  []events.Event
	seen    map[string]bool
}

func (r *fakeRecorder) Publish(ctx context.Context, ev events.Event) error {
	return r.PublishBatch(ctx, []events.Event{ev})
}

func (r *fakeRecorder) PublishBatch(_ context.Context, evs []events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return errors.New("audit store unavailable: nats: timeout")
	}
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.Header().ID)
		if !r.seen[ev.Header().ID] {
			r.seen[ev.Header().ID] = true
			r.stored = append(r.stored, ev)
		}
	}
	r.batches = append(r.batches, ids)
	return nil
}

func (r *fakeRecorder) set(down bool) { r.mu.Lock(); r.down = down; r.mu.Unlock() }

func (r *fakeRecorder) all() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Event(nil), r.stored...)
}

func testSession(t *testing.T, rec Recorder, mode string) *Session {
	t.Helper()
	db, err := NewDatabase(config.Database{Name: "pg", Protocol: "postgres", URI: "db.internal", AuditMode: mode})
	if err != nil {
		t.Fatal(err)
	}
	if db.Addr != "db.internal:5432" {
		t.Fatalf("addr %s", db.Addr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return NewSession(SessionOptions{Cluster: "c", Recorder: rec, Database: db, DBUser: "app", DBName: "shop",
		Identity: identity.Identity{User: "alice", Roles: []string{"dev"}}, Background: ctx,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func TestGateStampsSessionFields(t *testing.T) {
	rec := &fakeRecorder{}
	s := testSession(t, rec, "strict")
	q := &events.Query{Query: "select 1"}
	if err := s.Gate(context.Background(), &events.SessionStart{Status: events.Status{Success: true}}, q); err != nil {
		t.Fatal(err)
	}
	if q.SID != s.ID || q.EI != 1 || q.Envelope.User != "alice" || q.Roles[0] != "dev" || q.Database.Service != "pg" ||
		q.Database.User != "app" || q.Database.Name != "shop" || q.Protocol != "postgres" || q.Cluster != "c" || q.Type != "db.session.query" {
		t.Fatalf("stamped %+v", q)
	}
	if len(rec.batches) != 1 || len(rec.batches[0]) != 2 {
		t.Fatalf("batches %v", rec.batches)
	}
}

func TestRefusedEventsRepublishedFirst(t *testing.T) {
	rec := &fakeRecorder{down: true}
	s := testSession(t, rec, "strict")
	q1 := &events.Query{Query: "delete from t"}
	err := s.Gate(context.Background(), q1)
	var ae *AuditError
	if !errors.As(err, &ae) || ae.Error() != "audit store unavailable: nats: timeout" {
		t.Fatalf("err %v", err)
	}
	s.Refused(&events.Result{Status: events.Status{Error: "refused"}})
	rec.set(false)
	q2 := &events.Query{Query: "select 1"}
	if err := s.Gate(context.Background(), q2); err != nil {
		t.Fatal(err)
	}
	got := rec.all()
	if len(got) != 3 || got[0] != events.Event(q1) || got[2] != events.Event(q2) {
		t.Fatalf("stored %v", got)
	}
	for i, ev := range got {
		if ei := ev.(events.SessionEvent).SessionHeader().EI; ei != uint64(i) {
			t.Fatalf("event %d has ei %d", i, ei)
		}
	}
	if rec.batches[0][0] != q1.ID {
		t.Fatal("refused event not published first")
	}
}

func TestEmitRetriesInOrderAndCloseFlushes(t *testing.T) {
	rec := &fakeRecorder{down: true}
	s := testSession(t, rec, "strict")
	for i := range 5 {
		if err := s.Emit(&events.Result{CommandTag: string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Refused while down, kept for later.
	_ = s.Gate(context.Background(), &events.Query{Query: "x"})
	time.Sleep(50 * time.Millisecond)
	rec.set(false)
	done := s.Close(&events.SessionEnd{Reason: "client closed"})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("session did not drain")
	}
	got := rec.all()
	if len(got) != 7 {
		t.Fatalf("stored %d events", len(got))
	}
	seen := map[uint64]bool{}
	for _, ev := range got {
		seen[ev.(events.SessionEvent).SessionHeader().EI] = true
	}
	for i := range uint64(7) {
		if !seen[i] {
			t.Fatalf("ei %d missing", i)
		}
	}
	if end, ok := got[len(got)-1].(*events.SessionEnd); !ok || end.EI != 6 {
		t.Fatalf("last event %+v", got[len(got)-1])
	}
	if err := s.Gate(context.Background(), &events.Query{}); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("gate after close: %v", err)
	}
}

func TestAsyncGateDoesNotWait(t *testing.T) {
	rec := &fakeRecorder{down: true}
	s := testSession(t, rec, "async")
	if err := s.Gate(context.Background(), &events.Query{Query: "x"}); err != nil {
		t.Fatalf("async gate: %v", err)
	}
	rec.set(false)
	<-s.Close(nil)
	if len(rec.all()) != 1 {
		t.Fatal("async event lost")
	}
}

func TestSplitURI(t *testing.T) {
	for in, want := range map[string]string{
		"db:6000": "db:6000", "db": "db:5432", "postgres://u@db:7000/x": "db:7000", "[::1]:5": "::1:5",
	} {
		h, p, err := SplitURI(in, "5432")
		if err != nil || h+":"+p != want {
			t.Errorf("%s: %s:%s %v", in, h, p, err)
		}
	}
	if _, _, err := SplitURI("postgres:///x", "5432"); err == nil {
		t.Error("uri without host accepted")
	}
}

// A result emitted after a statement rides with the next gated batch: one
// store call for both, in ei order.
func TestGateCarriesQueuedEvents(t *testing.T) {
	rec := &fakeRecorder{}
	s := testSession(t, rec, "strict")
	s.linger = time.Hour // only the gate may take the queue
	q1 := &events.Query{Query: "select 1"}
	if err := s.Gate(context.Background(), q1); err != nil {
		t.Fatal(err)
	}
	r1 := &events.Result{CommandTag: "SELECT 1"}
	if err := s.Emit(r1); err != nil {
		t.Fatal(err)
	}
	q2 := &events.Query{Query: "select 2"}
	if err := s.Gate(context.Background(), q2); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	batches := append([][]string(nil), rec.batches...)
	rec.mu.Unlock()
	want := [][]string{{q1.ID}, {r1.ID, q2.ID}}
	if len(batches) != 2 || len(batches[1]) != 2 || batches[1][0] != want[1][0] || batches[1][1] != want[1][1] {
		t.Fatalf("store calls %v, want %v", batches, want)
	}
	if r1.EI != 1 || q2.EI != 2 {
		t.Fatalf("ei of result %d, of next query %d", r1.EI, q2.EI)
	}
}

// Without a next statement, an emitted event is stored after the linger.
func TestEmitStoredAfterLinger(t *testing.T) {
	rec := &fakeRecorder{}
	s := testSession(t, rec, "strict")
	if err := s.Emit(&events.Result{CommandTag: "SELECT 1"}); err != nil {
		t.Fatal(err)
	}
	rec.waitAny(t, "emitted event not stored without a gate")
}

// A refused gate hands the events it carried back to the background path,
// which stores them once the store is back, without waiting for another
// statement; the refused events go with the next batch.
func TestRefusedGateReturnsCarriedEvents(t *testing.T) {
	rec := &fakeRecorder{}
	s := testSession(t, rec, "strict")
	s.linger = time.Hour
	r0 := &events.Result{CommandTag: "SELECT 1"}
	if err := s.Emit(r0); err != nil {
		t.Fatal(err)
	}
	rec.set(true)
	if err := s.Gate(context.Background(), &events.Query{Query: "x"}); err == nil {
		t.Fatal("gate succeeded with the store down")
	}
	rec.set(false)
	rec.waitAny(t, "carried event not stored after the store came back")
	if got := rec.all(); len(got) != 1 || got[0].Header().ID != r0.ID {
		t.Fatalf("stored %v, want only the carried result", got)
	}
	if err := s.Gate(context.Background(), &events.Query{Query: "y"}); err != nil {
		t.Fatal(err)
	}
	got := rec.all()
	if len(got) != 3 {
		t.Fatalf("stored %d events, want 3", len(got))
	}
	for i, ev := range got {
		if ei := ev.(events.SessionEvent).SessionHeader().EI; ei != uint64(i) {
			t.Fatalf("event %d has ei %d", i, ei)
		}
	}
}

// A client retrying through a long outage does not make each later gate
// resend every refusal: past a batch they go to the background path, and
// once the store is back everything is stored, gapless.
func TestLongOutageKeepsGatesSmall(t *testing.T) {
	rec := &fakeRecorder{down: true}
	s := testSession(t, rec, "strict")
	const refused = 3 * lingerBatch
	for i := range refused {
		if err := s.Gate(context.Background(), &events.Query{Query: fmt.Sprint("retry ", i)}); err == nil {
			t.Fatal("gate succeeded with the store down")
		}
		s.Refused(&events.Result{ErrorMessage: "audit store unavailable"})
	}
	s.gateMu.Lock()
	kept := len(s.pending)
	s.gateMu.Unlock()
	if kept >= lingerBatch {
		t.Fatalf("%d refused events wait for the next gate", kept)
	}
	rec.set(false)
	if err := s.Gate(context.Background(), &events.Query{Query: "after"}); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	last := len(rec.batches[len(rec.batches)-1])
	rec.mu.Unlock()
	if last > lingerBatch+1 {
		t.Fatalf("the gate after the outage stored %d events at once", last)
	}
	<-s.Close(nil)
	got := rec.all()
	if len(got) != 2*refused+1 {
		t.Fatalf("stored %d events, want %d", len(got), 2*refused+1)
	}
	seen := map[uint64]bool{}
	for _, ev := range got {
		seen[ev.(events.SessionEvent).SessionHeader().EI] = true
	}
	for i := range uint64(2*refused + 1) {
		if !seen[i] {
			t.Fatalf("ei %d missing", i)
		}
	}
}

// waitAny waits up to 5s for r to store an event, failing t with msg then.
func (r *fakeRecorder) waitAny(t *testing.T, msg string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(r.all()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(time.Millisecond)
	}
}
