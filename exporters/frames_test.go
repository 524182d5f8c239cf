package exporters_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/internal/exportertest"
)

// stored maps every event in AUDIT to its bytes, in stream order.
func stored(t *testing.T, e *exportertest.Env) (ids []string, raw map[string][]byte) {
	t.Helper()
	raw = map[string][]byte{}
	e.EachEvent(t, func(_ uint64, ev []byte) {
		var h struct{ ID string }
		if err := json.Unmarshal(ev, &h); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, h.ID)
		raw[h.ID] = bytes.Clone(ev)
	})
	return ids, raw
}

// Frames of 1 to 100 events from several sessions, between single events
// stored the old way: each event reaches the sink once, in stream order,
// as its exact bytes, under the subject it would have had alone.
func TestFramesDeliveredOnceInOrder(t *testing.T) {
	e := exportertest.Start(t, exportertest.Options{})
	ids := e.FillFrames(t, 3000, nil)
	order, raw := stored(t, e)
	if !slices.Equal(order, ids) {
		t.Fatal("the stream does not hold the events in the order published")
	}
	sink := newMemSink()
	d := fast()
	d.BatchSize = 64 // smaller than many frames: they are cut
	x, stop := run(t, e, exporters.Options{Name: "frames", Sink: sink, Delivery: d})
	e.Settled(t, "frames", 30*time.Second)
	stop()
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if !slices.Equal(sink.order, ids) {
		t.Fatalf("delivered %d events, not the %d stored in stream order", len(sink.order), len(ids))
	}
	for _, id := range ids {
		if !bytes.Equal(sink.data[id], raw[id]) {
			t.Fatalf("event %s: delivered %s, stored %s", id, sink.data[id], raw[id])
		}
		want, err := events.EventSubjectOf(raw[id])
		if err != nil {
			t.Fatal(err)
		}
		if sink.subject[id] != want {
			t.Fatalf("event %s: subject %q, want %q", id, sink.subject[id], want)
		}
	}
	if st := x.Stats(); st.Delivered != uint64(len(ids)) || st.DeadLetters != 0 {
		t.Fatalf("stats %+v, want %d delivered", st, len(ids))
	}
}

// gateSink confirms the first batch, then holds the second until the
// test opens the gate.
type gateSink struct {
	mu      sync.Mutex
	ids     []string
	batches int
	held    chan struct{} // closed when the second batch arrives
	gate    chan struct{}
}

func (s *gateSink) Deliver(ctx context.Context, recs []exporters.Record) error {
	s.mu.Lock()
	s.batches++
	n := s.batches
	s.mu.Unlock()
	if n == 2 {
		close(s.held)
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		s.ids = append(s.ids, r.ID)
	}
	return nil
}

func (s *gateSink) Close() error { return nil }

func (s *gateSink) delivered() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

func consumerInfo(t *testing.T, js jetstream.JetStream, name string) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(context.Background(), events.AuditStream, exporters.ConsumerName(name))
	if err != nil {
		t.Fatal(err)
	}
	ci, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ci
}

// encodeN encodes n queries of three sessions.
func encodeN(t *testing.T, n int) (evs [][]byte, ids []string) {
	for i := 0; i < n; i++ {
		q := exportertest.Query(i)
		q.SID = fmt.Sprintf("s%d", i%3)
		evs = append(evs, exportertest.Encode(t, q))
		ids = append(ids, q.ID)
	}
	return evs, ids
}

// A frame cut into several batches is acknowledged only when its last
// event is confirmed.
func TestFrameAckedAfterItsLastEvent(t *testing.T) {
	e := exportertest.Start(t, exportertest.Options{})
	evs, ids := encodeN(t, 50)
	seq := e.Frame(t, evs...)
	sink := &gateSink{held: make(chan struct{}), gate: make(chan struct{})}
	d := fast()
	d.BatchSize = 10
	_, _ = run(t, e, exporters.Options{Name: "gate", Sink: sink, Delivery: d})
	select {
	case <-sink.held:
	case <-time.After(20 * time.Second):
		t.Fatal("the second batch never came")
	}
	if got := sink.delivered(); !slices.Equal(got, ids[:10]) {
		t.Fatalf("first batch %v, want the frame's first 10 events", got)
	}
	if ci := consumerInfo(t, e.JS, "gate"); ci.AckFloor.Stream >= seq || ci.NumAckPending != 1 {
		t.Fatalf("ack floor %d, ack pending %d: the frame (seq %d) was acknowledged with 40 events unconfirmed", ci.AckFloor.Stream, ci.NumAckPending, seq)
	}
	close(sink.gate)
	e.Settled(t, "gate", 20*time.Second)
	if ci := consumerInfo(t, e.JS, "gate"); ci.AckFloor.Stream != seq {
		t.Fatalf("ack floor %d, want the frame's %d", ci.AckFloor.Stream, seq)
	}
	if got := sink.delivered(); !slices.Equal(got, ids) {
		t.Fatalf("delivered %d events, want the frame's 50 in order", len(got))
	}
}

// A sink refusing event 3 of a 5-event frame: that event alone is
// dead-lettered and reported, the other four are delivered, the frame is
// acknowledged. The sink says which record (RecordErrors) or refuses the
// whole batch (Permanent), which the exporter narrows down.
func TestFrameEventDeadLetteredAlone(t *testing.T) {
	for _, mode := range []string{"record", "batch"} {
		t.Run(mode, func(t *testing.T) {
			e := exportertest.Start(t, exportertest.Options{})
			evs, ids := encodeN(t, 5)
			seq := e.Frame(t, evs...)
			bad := ids[2]
			sink := newMemSink()
			sink.fail = func(recs []exporters.Record) error {
				for i, r := range recs {
					if r.ID != bad {
						continue
					}
					if mode == "batch" {
						return exporters.Permanent(errors.New("the collector refuses this batch"))
					}
					return exporters.RecordErrors{i: exporters.Permanent(errors.New("invalid record"))}
				}
				return nil
			}
			name := "dl-" + mode
			x, stop := run(t, e, exporters.Options{Name: name, Sink: sink, Delivery: fast()})
			e.Settled(t, name, 20*time.Second)
			stop()
			for i, id := range ids {
				if want := i != 2; sink.has(id) != want || sink.got[id] > 1 {
					t.Fatalf("event %d: delivered %d times", i, sink.got[id])
				}
			}
			dl := e.DeadLetters(t, name)
			if len(dl) != 1 {
				t.Fatalf("%d dead letters, want 1", len(dl))
			}
			h := dl[0].Header
			if !bytes.Equal(dl[0].Data, evs[2]) || h.Get(exporters.HeaderEventID) != bad ||
				h.Get(exporters.HeaderStreamSeq) != strconv.FormatUint(seq, 10) || h.Get(exporters.HeaderFrameEvent) != "2" ||
				h.Get(exporters.HeaderSubject) != "audit.test.s2.db.session.query" {
				t.Fatalf("dead letter %+v: %s", h, dl[0].Data)
			}
			reports := e.AuditEvents(t, "exporter.dead_letter")
			if len(reports) != 1 {
				t.Fatalf("%d exporter.dead_letter events, want 1", len(reports))
			}
			var rep events.ExporterDeadLetter
			if err := json.Unmarshal(reports[0], &rep); err != nil {
				t.Fatal(err)
			}
			if rep.EventID != bad || rep.StreamSeq != seq || rep.EventBytes != len(evs[2]) {
				t.Fatalf("report %+v", rep)
			}
			if ci := consumerInfo(t, e.JS, name); ci.AckFloor.Stream < seq {
				t.Fatalf("the frame was not acknowledged: ack floor %d", ci.AckFloor.Stream)
			}
			if st := x.Stats(); st.DeadLetters != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// An event of a frame that is not readable JSON is dead-lettered alone;
// the events around it flow.
func TestUnreadableEventInFrame(t *testing.T) {
	e := exportertest.Start(t, exportertest.Options{})
	evs, ids := encodeN(t, 3)
	// A frame as a broken writer might store it: the header counts three
	// events, the second is cut short.
	data, _, err := events.EncodeFrame(nil, events.FrameHeader{ID: events.NewID(), Src: "h1", Run: "r1", Prev: events.FrameGenesis("r1")}, evs, nil)
	if err != nil {
		t.Fatal(err)
	}
	broken := []byte(`{"id":"x","type":"db.session.query",`)
	data = bytes.Replace(data, evs[1], broken, 1)
	if _, err := e.JS.Publish(context.Background(), "audit.test.frame.h1", data); err != nil {
		t.Fatal(err)
	}
	sink := newMemSink()
	_, _ = run(t, e, exporters.Options{Name: "broken", Sink: sink, Delivery: fast()})
	e.Settled(t, "broken", 20*time.Second)
	if !sink.has(ids[0]) || !sink.has(ids[2]) {
		t.Fatal("the readable events of the frame were not delivered")
	}
	dl := e.DeadLetters(t, "broken")
	if len(dl) != 1 || !bytes.Equal(dl[0].Data, broken) || dl[0].Header.Get(exporters.HeaderFrameEvent) != "1" {
		t.Fatalf("dead letters: %+v", dl)
	}
}

// The exporter loses its connection (a crash, as the server sees it) with
// part of a frame delivered: the frame is not acknowledged, and after the
// ack wait the next process delivers all of its events again.
func TestFrameRedeliveredAfterCrash(t *testing.T) {
	e := exportertest.Start(t, exportertest.Options{})
	evs, ids := encodeN(t, 30)
	e.Frame(t, evs...)
	nc, err := nats.Connect(e.NATS.URL(), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	first := &gateSink{held: make(chan struct{}), gate: make(chan struct{})}
	d := fast()
	d.BatchSize = 10
	d.ShutdownGrace = config.Duration(100 * time.Millisecond)
	_, stop := run(t, e, exporters.Options{Name: "crash", Sink: first, JS: js, Delivery: d})
	select {
	case <-first.held:
	case <-time.After(20 * time.Second):
		t.Fatal("the second batch never came")
	}
	nc.Close()
	stop()
	if got := first.delivered(); !slices.Equal(got, ids[:10]) {
		t.Fatalf("before the crash: %v, want the frame's first 10 events", got)
	}
	second := newMemSink()
	_, _ = run(t, e, exporters.Options{Name: "crash", Sink: second, Delivery: d})
	e.Settled(t, "crash", 30*time.Second)
	second.mu.Lock()
	defer second.mu.Unlock()
	if !slices.Equal(second.order, ids) {
		t.Fatalf("after the crash: %d events, want the frame's 30 again, in order", len(second.order))
	}
}

// Type filters pick events out of frames and out of single messages, and
// an exporter whose consumer still has the subject filters of older
// versions reads frames once updated.
func TestTypeFilterInFrames(t *testing.T) {
	e := exportertest.Start(t, exportertest.Options{})
	mk := func(i int) events.Event {
		switch i % 3 {
		case 0:
			return exportertest.Query(i)
		case 1:
			return &events.SessionEnd{Session: events.Session{SID: fmt.Sprintf("s%d", i%5)}, Database: events.Database{Service: "pg-main"}, Reason: "client closed"}
		}
		return &events.UserCreate{Name: fmt.Sprintf("u%d", i)}
	}
	// The consumer as an older version made it: filtered by subject.
	st, err := e.JS.Stream(context.Background(), events.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateOrUpdateConsumer(context.Background(), jetstream.ConsumerConfig{
		Durable: exporters.ConsumerName("types"), AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubjects: []string{"audit.*.*.db.session.end", "audit.*.*.user.*"},
	}); err != nil {
		t.Fatal(err)
	}
	ids := e.FillFrames(t, 600, mk)
	sink := newMemSink()
	x, stop := run(t, e, exporters.Options{Name: "types", Sink: sink, Delivery: fast(),
		Filter: exporters.Filter{Types: []string{"db.session.end", "user.*"}}})
	e.Settled(t, "types", 20*time.Second)
	stop()
	var want []string
	for i, id := range ids {
		if i%3 != 0 {
			want = append(want, id)
		}
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if !slices.Equal(sink.order, want) {
		t.Fatalf("delivered %d events, want the %d session ends and user creations in order", len(sink.order), len(want))
	}
	if st := x.Stats(); st.Filtered != uint64(len(ids)-len(want)) {
		t.Fatalf("stats %+v: want %d filtered", st, len(ids)-len(want))
	}
	if ci := consumerInfo(t, e.JS, "types"); len(ci.Config.FilterSubjects) != 0 || ci.Config.FilterSubject != "" {
		t.Fatalf("consumer still filtered by subject: %v %q", ci.Config.FilterSubjects, ci.Config.FilterSubject)
	}
}
