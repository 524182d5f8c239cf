package exporters_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/internal/exportertest"
	"github.com/tollgate-db/tollgate/schemas"
)

// memSink keeps what it is given; fail, when set, decides each batch's fate.
type memSink struct {
	mu      sync.Mutex
	got     map[string]int // id -> deliveries
	data    map[string][]byte
	batches int
	fail    func(recs []exporters.Record) error
	closed  bool
}

func newMemSink() *memSink { return &memSink{got: map[string]int{}, data: map[string][]byte{}} }

func (s *memSink) Deliver(_ context.Context, recs []exporters.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches++
	var err error
	if s.fail != nil {
		err = s.fail(recs)
	}
	var re exporters.RecordErrors
	switch {
	case err == nil:
	case errors.As(err, &re):
	default:
		return err
	}
	for i, r := range recs {
		if _, failed := re[i]; failed {
			continue
		}
		s.got[r.ID]++
		if prev, ok := s.data[r.ID]; ok && !bytes.Equal(prev, r.Data) {
			panic("same id, different data: " + r.ID)
		}
		s.data[r.ID] = bytes.Clone(r.Data)
	}
	return err
}

func (s *memSink) Close() error { s.mu.Lock(); s.closed = true; s.mu.Unlock(); return nil }

func (s *memSink) count() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.got) }

func (s *memSink) has(id string) bool { s.mu.Lock(); defer s.mu.Unlock(); return s.got[id] > 0 }

// run starts an exporter and returns a function that stops it and waits.
func run(t *testing.T, e *exportertest.Env, o exporters.Options) (*exporters.Exporter, func()) {
	t.Helper()
	if o.JS == nil {
		o.JS = e.JS
	}
	if o.Publisher == nil {
		o.Publisher = e.Strict
	}
	if o.SinkType == "" {
		o.SinkType = "memory"
	}
	x, err := exporters.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("exporter %s: %v", o.Name, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("exporter %s did not stop within 30s", o.Name)
			}
		})
	}
	t.Cleanup(stop)
	return x, stop
}

func fast() exporters.Delivery {
	return exporters.Delivery{
		Linger: config.Duration(20 * time.Millisecond), BackoffMin: config.Duration(10 * time.Millisecond),
		BackoffMax: config.Duration(200 * time.Millisecond), AckWait: config.Duration(2 * time.Second),
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeliversEveryEvent(t *testing.T) {
	e := exportertest.Start(t, exportertest.Options{})
	ids := e.Fill(t, 5000, nil)
	sink := newMemSink()
	x, stop := run(t, e, exporters.Options{Name: "mem", Sink: sink, Delivery: fast()})
	waitFor(t, "every event", 30*time.Second, func() bool { return sink.count() == len(ids) })
	e.Settled(t, "mem", 10*time.Second)
	for _, id := range ids {
		if !sink.has(id) {
			t.Fatalf("event %s not delivered", id)
		}
	}
	// Every delivered record is the stored event, valid against its schema.
	sink.mu.Lock()
	for id, d := range sink.data {
		if err := schemas.Validate(d); err != nil {
			t.Fatalf("event %s: %v", id, err)
		}
	}
	sink.mu.Unlock()
	stop()
	if st := x.Stats(); st.Delivered != uint64(len(ids)) || st.DeadLetters != 0 {
		t.Fatalf("stats %+v, want %d delivered", st, len(ids))
	}
	if !sink.closed {
		t.Fatal("sink not closed at shutdown")
	}
	ls, err := exporters.List(context.Background(), e.JS)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Name != "mem" || ls[0].Stats.Delivered != uint64(len(ids)) || ls[0].Lag != 0 {
		t.Fatalf("List: %+v", ls)
	}
}

func TestMain(m *testing.M) { mainWithChild(m) }

var _ = fmt.Sprint
var _ = strings.Contains
var _ = events.AuditStream
