package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func newTestPublisher(t *testing.T, js jetstream.JetStream, opts ...PublisherOption) *Publisher {
	t.Helper()
	p, err := NewPublisher(js, "test", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p
}

// lastStored reads the newest message of the AUDIT stream on subj.
func lastStored(t *testing.T, js jetstream.JetStream, subj string) *jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		t.Fatalf("no message on %s: %v", subj, err)
	}
	return m
}

func TestPublishStrictStoresEvent(t *testing.T) {
	s := startStore(t, t.TempDir())
	p := newTestPublisher(t, s.js)
	ev := queryEvent("sess1", 0)
	ev.Parameters = []string{"42", "<b>&"}
	if err := p.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	// Strict: stored by the time Publish returned.
	if n := s.streamMsgs(t); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
	m := lastStored(t, s.js, "audit.test.sess1.db.session.query")
	if got := m.Header.Get(jetstream.MsgIDHeader); got != ev.ID || ev.ID == "" {
		t.Fatalf("Nats-Msg-Id %q, event id %q", got, ev.ID)
	}
	var back Query
	if err := json.Unmarshal(m.Data, &back); err != nil {
		t.Fatalf("stored event is not JSON: %v: %s", err, m.Data)
	}
	if back.ID != ev.ID || back.Type != "db.session.query" || back.Cluster != "test" || back.Query != benchQuery ||
		back.Parameters[1] != "<b>&" || !back.Time.Equal(ev.Time) {
		t.Fatalf("stored event differs: %+v", back)
	}
	if strings.Contains(string(m.Data), `\u003c`) {
		t.Fatalf("HTML-escaped JSON: %s", m.Data)
	}
	if st := p.Stats(); st.Published != 1 || st.Acked != 1 || st.Duplicates != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPublishBatchWaitsForEveryAck(t *testing.T) {
	s := startStore(t, t.TempDir())
	p := newTestPublisher(t, s.js)
	evs := make([]Event, 16)
	for i := range evs {
		evs[i] = queryEvent("sessb", uint64(i))
	}
	if err := p.PublishBatch(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	if n := s.streamMsgs(t); n != 16 {
		t.Fatalf("stream holds %d messages, want 16", n)
	}
	if st := p.Stats(); st.Acked != 16 {
		t.Fatalf("stats %+v", st)
	}
	// The whole batch again: every event is a duplicate, nothing new stored.
	if err := p.PublishBatch(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	if n := s.streamMsgs(t); n != 16 {
		t.Fatalf("republished batch: stream holds %d messages, want 16", n)
	}
	if st := p.Stats(); st.Duplicates != 16 {
		t.Fatalf("stats after republish %+v", st)
	}
}

func TestRepublishSameIDIsStoredOnce(t *testing.T) {
	s := startStore(t, t.TempDir())
	p := newTestPublisher(t, s.js)
	ev := queryEvent("sessd", 0)
	for range 2 {
		if err := p.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	// A different event object with the same id, as a restarted agent would send.
	again := queryEvent("sessd", 0)
	again.ID = ev.ID
	if err := p.Publish(context.Background(), again); err != nil {
		t.Fatal(err)
	}
	if n := s.streamMsgs(t); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
	if st := p.Stats(); st.Duplicates != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// A publish that timed out may still reach the store (here: it waits in the
// client's reconnect buffer); publishing it again must not store it twice.
func TestTimedOutPublishRetriedIsStoredOnce(t *testing.T) {
	s := startTCPStore(t, t.TempDir())
	p := newTestPublisher(t, s.js, WithAckTimeout(200*time.Millisecond))
	s.stopServer()
	ev := queryEvent("sesst", 0)
	err := p.Publish(context.Background(), ev)
	if !errors.Is(err, ErrAuditUnavailable) {
		t.Fatalf("publish with the server down: %v", err)
	}
	s.restartServer(t)
	var retryErr error
	for range 50 {
		if retryErr = p.Publish(context.Background(), ev); retryErr == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if retryErr != nil {
		t.Fatal(retryErr)
	}
	if n := s.streamMsgs(t); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
	// Whether the timed-out send was flushed from the reconnect buffer
	// before the retry or after it (or lost with a server not yet ready),
	// the stream holds the event once.
	t.Logf("stats %+v", p.Stats())
}

// The case dedup exists for: the event was stored but its acknowledgement
// came too late, so the caller saw an error and publishes it again.
func TestLateAckRetryIsDuplicate(t *testing.T) {
	s := startStore(t, t.TempDir())
	hasty := newTestPublisher(t, s.js, WithAckTimeout(time.Microsecond))
	p := newTestPublisher(t, s.js)
	ctx := context.Background()
	for i := range 200 {
		ev := queryEvent("sessk", uint64(i))
		if err := hasty.Publish(ctx, ev); !errors.Is(err, ErrAuditUnavailable) {
			continue
		}
		if !s.waitStored(ev, 200*time.Millisecond) {
			continue // this one really was not stored
		}
		before := s.streamMsgs(t)
		if err := p.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if after := s.streamMsgs(t); after != before {
			t.Fatalf("retry of a stored event: stream went from %d to %d messages", before, after)
		}
		if st := p.Stats(); st.Duplicates != 1 {
			t.Fatalf("stats %+v", st)
		}
		return
	}
	t.Fatal("no publish timed out after being stored in 200 tries")
}

func TestUnavailableErrorWithinTimeout(t *testing.T) {
	s := startTCPStore(t, t.TempDir())
	const timeout = 300 * time.Millisecond
	p := newTestPublisher(t, s.js, WithAckTimeout(timeout))
	if err := p.Publish(context.Background(), queryEvent("sessu", 0)); err != nil {
		t.Fatal(err)
	}
	s.stopServer()

	start := time.Now()
	err := p.Publish(context.Background(), queryEvent("sessu", 1))
	took := time.Since(start)
	if !errors.Is(err, ErrAuditUnavailable) {
		t.Fatalf("want ErrAuditUnavailable, got %v", err)
	}
	if !strings.Contains(err.Error(), "audit store unavailable: no acknowledgement from JetStream within 300ms") {
		t.Fatalf("unclear error: %v", err)
	}
	t.Logf("strict publish with the server down returned after %s: %v", took, err)

	start = time.Now()
	err = p.PublishBatch(context.Background(), []Event{queryEvent("sessu", 2), queryEvent("sessu", 3)})
	t.Logf("strict batch with the server down returned after %s: %v", time.Since(start), err)
	if !errors.Is(err, ErrAuditUnavailable) {
		t.Fatalf("batch: want ErrAuditUnavailable, got %v", err)
	}

	// A closed connection fails at once, with the reason.
	s.nc.Close()
	err = p.Publish(context.Background(), queryEvent("sessu", 4))
	if !errors.Is(err, ErrAuditUnavailable) || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("closed connection: %v", err)
	}
}

func TestCallerContextEndsPublish(t *testing.T) {
	s := startTCPStore(t, t.TempDir())
	p := newTestPublisher(t, s.js, WithAckTimeout(10*time.Second))
	s.stopServer()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := p.Publish(ctx, queryEvent("sessc", 0))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrAuditUnavailable) {
		t.Fatalf("want the caller's context error, got %v", err)
	}
}

func TestNoStreamIsUnavailable(t *testing.T) {
	s := startStore(t, t.TempDir())
	ctx := context.Background()
	if err := s.js.DeleteStream(ctx, AuditStream); err != nil {
		t.Fatal(err)
	}
	p := newTestPublisher(t, s.js, WithAckTimeout(500*time.Millisecond))
	err := p.Publish(ctx, queryEvent("sessn", 0))
	if !errors.Is(err, ErrAuditUnavailable) || !strings.Contains(err.Error(), "AUDIT stream") {
		t.Fatalf("want an error naming the missing stream, got %v", err)
	}
}

func TestLargeEventKeepsFullValues(t *testing.T) {
	s := startStore(t, t.TempDir())
	const limit = 4096
	p := newTestPublisher(t, s.js, WithMaxMessageSize(limit))
	bigQuery := "SELECT '" + strings.Repeat("é", 6000) + "'"
	bigParam := strings.Repeat("x", 9000)
	ev := queryEvent("sessl", 3)
	ev.Query = bigQuery
	ev.Parameters = []string{"1", bigParam, "3"}
	if err := p.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	m := lastStored(t, s.js, "audit.test.sessl.db.session.query")
	if size := len(m.Data) + msgIDHeaderLen + len(ev.ID); size > limit {
		t.Fatalf("message is %d bytes, limit %d", size, limit)
	}
	var stored map[string]any
	if err := json.Unmarshal(m.Data, &stored); err != nil {
		t.Fatal(err)
	}
	if stored["id"] != ev.ID || stored["sid"] != "sessl" || stored["ei"] != 3.0 || stored["db_user"] != "app" {
		t.Fatalf("envelope changed: %v", stored)
	}
	if stored["db_query_truncated"] != true || stored["db_query_parameters_truncated"] != true {
		t.Fatalf("truncation not marked: %s", m.Data)
	}
	q := stored["db_query"].(string)
	if !strings.HasPrefix(bigQuery, q) || len(q) == 0 || len(q) >= len(bigQuery) {
		t.Fatalf("db_query is not a prefix of the statement: %d bytes", len(q))
	}
	params := stored["db_query_parameters"].([]any)
	if len(params) != 3 || params[0] != "1" || params[2] != "3" || !strings.HasPrefix(bigParam, params[1].(string)) {
		t.Fatalf("parameters: %v", params)
	}

	full, err := LargeFields(context.Background(), s.js, ev.ID)
	if err != nil {
		t.Fatal(err)
	}
	var gotQuery string
	var gotParams []string
	if err := json.Unmarshal(full["db_query"], &gotQuery); err != nil || gotQuery != bigQuery {
		t.Fatalf("full db_query not kept (%v): %d bytes", err, len(gotQuery))
	}
	if err := json.Unmarshal(full["db_query_parameters"], &gotParams); err != nil || len(gotParams) != 3 || gotParams[1] != bigParam {
		t.Fatalf("full parameters not kept: %v", err)
	}
	if st := p.Stats(); st.Truncated != 1 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := LargeFields(context.Background(), s.js, "no-such-event"); err == nil {
		t.Fatal("LargeFields of an unknown event succeeded")
	}
}

func TestMaxMessageSizeFromServer(t *testing.T) {
	s := startStore(t, t.TempDir())
	p := newTestPublisher(t, s.js)
	if got := p.MaxMessageSize(); got != int(s.nc.MaxPayload()) {
		t.Fatalf("max message size %d, server max payload %d", got, s.nc.MaxPayload())
	}
	ctx := context.Background()
	cfg := AuditStreamConfig(StreamOptions{})
	cfg.MaxMsgSize = 8192
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	p2 := newTestPublisher(t, s.js)
	if got := p2.MaxMessageSize(); got != 8192 {
		t.Fatalf("max message size %d, stream limit 8192", got)
	}
	// An event over the stream's limit is cut, not refused.
	ev := queryEvent("sessm", 0)
	ev.Query = strings.Repeat("y", 20000)
	if err := p2.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
}

func TestAsyncNeverDrops(t *testing.T) {
	s := startStore(t, t.TempDir())
	p := newTestPublisher(t, s.js, WithMode(ModeAsync), WithQueueSize(8))
	const writers, each = 4, 5000
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			sid := fmt.Sprintf("sessa%d", w)
			for i := range each {
				if err := p.Publish(context.Background(), queryEvent(sid, uint64(i))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.streamMsgs(t); n != writers*each {
		t.Fatalf("stream holds %d messages, %d were published", n, writers*each)
	}
	st := p.Stats()
	if st.Acked != writers*each || st.Pending != 0 || st.QueueLen != 0 {
		t.Fatalf("stats %+v", st)
	}
	if st.Blocked <= 0 {
		t.Fatalf("a queue of 8 never blocked 4 writers: %+v", st)
	}
	t.Logf("stats %+v", st)
	if err := p.Publish(context.Background(), queryEvent("late", 0)); !errors.Is(err, ErrPublisherClosed) {
		t.Fatalf("publish after close: %v", err)
	}
}

// Async events published while the store is down are stored once it is
// back: retried with the same ids, none lost, none doubled.
func TestAsyncRetriesThroughOutage(t *testing.T) {
	s := startTCPStore(t, t.TempDir())
	p := newTestPublisher(t, s.js, WithMode(ModeAsync), WithQueueSize(64), WithAckTimeout(100*time.Millisecond))
	ctx := context.Background()
	for i := range 10 {
		if err := p.Publish(ctx, queryEvent("sesso", uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.stopServer()
	for i := 10; i < 50; i++ {
		if err := p.Publish(ctx, queryEvent("sesso", uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Let some sends time out and be retried while the server is away.
	time.Sleep(300 * time.Millisecond)
	s.restartServer(t)
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	if n := s.streamMsgs(t); n != 50 {
		t.Fatalf("stream holds %d messages, want 50", n)
	}
	if st := p.Stats(); st.Retried == 0 || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAsyncCloseReportsUnstored(t *testing.T) {
	s := startTCPStore(t, t.TempDir())
	p, err := NewPublisher(s.js, "test", WithMode(ModeAsync), WithAckTimeout(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	s.stopServer()
	for i := range 5 {
		if err := p.Publish(context.Background(), queryEvent("sessx", uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = p.Close(ctx)
	if !errors.Is(err, ErrAuditUnavailable) || !strings.Contains(err.Error(), "5 events not stored") {
		t.Fatalf("close with the store down: %v", err)
	}
}

func TestPublisherOptionErrors(t *testing.T) {
	s := startStore(t, t.TempDir())
	for _, tc := range []struct {
		cluster string
		opt     PublisherOption
		want    string
	}{
		{"a.b", nil, "cluster name"},
		{"c", WithQueueSize(0), "queue size 0"},
		{"c", WithAckTimeout(0), "ack timeout 0s"},
		{"c", WithMaxMessageSize(100), "max message size 100"},
		{"c", WithMode(Mode(7)), "mode 7"},
		{"c", WithLogger(nil), "logger is nil"},
	} {
		var opts []PublisherOption
		if tc.opt != nil {
			opts = append(opts, tc.opt)
		}
		_, err := NewPublisher(s.js, tc.cluster, opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error containing %q, got %v", tc.want, err)
		}
	}
	p := newTestPublisher(t, s.js)
	var nilQuery *Query
	for _, ev := range []Event{nil, nilQuery} {
		if err := p.Publish(context.Background(), ev); err == nil || !strings.Contains(err.Error(), "nil event") {
			t.Errorf("nil event: %v", err)
		}
	}
	if _, err := ParseMode("lazy"); err == nil || !strings.Contains(err.Error(), `"lazy"`) {
		t.Errorf("ParseMode: %v", err)
	}
}

func TestEnsureStreamsIdempotent(t *testing.T) {
	s := startStore(t, t.TempDir())
	ctx := context.Background()
	o := StreamOptions{AuditMaxAge: time.Hour, AuditMaxBytes: 1 << 30}
	for range 2 {
		if err := EnsureStreams(ctx, s.js, o); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.js.Stream(ctx, AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	c := st.CachedInfo().Config
	if c.MaxAge != time.Hour || c.MaxBytes != 1<<30 || c.Duplicates != DefaultDuplicates || c.Storage != jetstream.FileStorage {
		t.Fatalf("AUDIT config %+v", c)
	}
	state, err := s.js.Stream(ctx, StateStream)
	if err != nil {
		t.Fatal(err)
	}
	if c := state.CachedInfo().Config; c.MaxAge != 0 || c.Subjects[0] != StateSubjects {
		t.Fatalf("STATE config %+v", c)
	}
	if _, err := s.js.ObjectStore(ctx, LargeFieldsBucket); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStreams(ctx, s.js, StreamOptions{Replicas: 2}); err == nil || !strings.Contains(err.Error(), "replicas: 2") {
		t.Fatalf("bad replicas: %v", err)
	}
}
