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

func TestPublishStrictStoresEvent(t *testing.T) {
	s := startStore(t, t.TempDir())
	p := newTestPublisher(t, s.js, WithSource("host-1"))
	ev := queryEvent("sess1", 0)
	ev.Parameters = []string{"42", "<b>&"}
	if err := p.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	// Strict: stored by the time Publish returned, in a frame of its own.
	frames := s.stored(t)
	if len(frames) != 1 || len(frames[0].Events) != 1 {
		t.Fatalf("stream holds %d messages, want 1 frame of 1 event", len(frames))
	}
	f := frames[0]
	if h := f.Header; h == nil || h.Src != "host-1" || h.FSeq != 0 || h.Prev != FrameGenesis(h.Run) || h.N != 1 ||
		len(h.SIDs) != 1 || h.SIDs[0] != "sess1" || !h.First.Equal(ev.Time) || !h.Last.Equal(ev.Time) {
		t.Fatalf("frame header %+v", f.Header)
	}
	if f.Trailer != nil {
		t.Fatal("a publisher without a signer signed a frame")
	}
	var back Query
	if err := json.Unmarshal(f.Events[0], &back); err != nil {
		t.Fatalf("stored event is not JSON: %v: %s", err, f.Events[0])
	}
	if back.ID != ev.ID || back.Type != "db.session.query" || back.Cluster != "test" || back.Query != benchQuery ||
		back.Parameters[1] != "<b>&" || !back.Time.Equal(ev.Time) || back.Prev != ChainGenesis("sess1") {
		t.Fatalf("stored event differs: %+v", back)
	}
	if strings.Contains(string(f.Events[0]), `\u003c`) {
		t.Fatalf("HTML-escaped JSON: %s", f.Events[0])
	}
	if st := p.Stats(); st.Published != 1 || st.Acked != 1 || st.Frames != 1 || st.Duplicates != 0 {
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
	stored := s.storedEvents(t)
	if len(stored) != 16 {
		t.Fatalf("stream holds %d events, want 16", len(stored))
	}
	if st := p.Stats(); st.Acked != 16 || st.Frames > 16 {
		t.Fatalf("stats %+v", st)
	}
	checkChain(t, stored, "sessb")
}

// checkChain checks that the events of sid among evs form one chain from
// the session's genesis, following prev: after an outage, frames resent
// may be stored out of their order, and the chain, not the stream order,
// is what proves the session.
func checkChain(t *testing.T, evs [][]byte, sid string) {
	t.Helper()
	byPrev := map[string][]byte{}
	n := 0
	for _, ev := range evs {
		var h struct {
			SID  string `json:"sid"`
			EI   uint64 `json:"ei"`
			Prev string `json:"prev"`
		}
		if err := json.Unmarshal(ev, &h); err != nil {
			t.Fatal(err)
		}
		if h.SID != sid {
			continue
		}
		if _, dup := byPrev[h.Prev]; dup {
			t.Fatalf("session %s: two events follow %s", sid, h.Prev)
		}
		byPrev[h.Prev] = ev
		n++
	}
	if n == 0 {
		t.Fatalf("no event of session %s", sid)
	}
	prev := ChainGenesis(sid)
	for i := range n {
		ev, ok := byPrev[prev]
		if !ok {
			t.Fatalf("session %s: the chain breaks after %d of %d events", sid, i, n)
		}
		var h struct {
			EI uint64 `json:"ei"`
		}
		_ = json.Unmarshal(ev, &h)
		if h.EI != uint64(i) {
			t.Fatalf("session %s: event %d of the chain has ei %d", sid, i, h.EI)
		}
		prev = EventHash(ev)
	}
}

// Under load, the events of many sessions wait for the frame in flight and
// go together in the next one: far fewer messages than events, every
// session chained, every frame chained to the one before.
func TestGroupCommitChainsSessionsAndFrames(t *testing.T) {
	s := startStore(t, t.TempDir())
	signer := testSigner(t)
	p := newTestPublisher(t, s.js, WithSigner(signer))
	const sessions, each = 8, 200
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Go(func() {
			sid := fmt.Sprintf("sessg%d", i)
			for ei := range each {
				if err := p.Publish(context.Background(), queryEvent(sid, uint64(ei))); err != nil {
					t.Error(err)
					return
				}
			}
			end := &SessionEnd{Session: Session{SID: sid, EI: each}}
			if err := p.Publish(context.Background(), end); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	frames := s.stored(t)
	var all [][]byte
	prev, signed := "", 0
	for i, f := range frames {
		if f.Header.FSeq != uint64(i) {
			t.Fatalf("frame %d has fseq %d", i, f.Header.FSeq)
		}
		if i == 0 {
			prev = FrameGenesis(f.Header.Run)
		}
		if f.Header.Prev != prev {
			t.Fatalf("frame %d: prev %s, want %s", i, f.Header.Prev, prev)
		}
		prev = f.Hash()
		if f.Trailer != nil {
			signed++
			if err := VerifySignature(signer.Cert, f.Signed, f.Trailer.Sig); err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
		}
		all = append(all, f.Events...)
	}
	// Signed at most every signEvery, and always at a session's end: the
	// run ends signed, and each signature proves the frames before it.
	if last := frames[len(frames)-1]; last.Trailer == nil || signed == 0 {
		t.Fatalf("%d of %d frames signed, the last one not", signed, len(frames))
	}
	if len(all) != sessions*(each+1) {
		t.Fatalf("%d events stored, want %d", len(all), sessions*(each+1))
	}
	if len(frames) >= len(all) {
		t.Fatalf("%d frames for %d events: no group commit", len(frames), len(all))
	}
	t.Logf("%d events from %d sessions in %d frames, %d signed", len(all), sessions, len(frames), signed)
	sealed := 0
	for i := range sessions {
		sid := fmt.Sprintf("sessg%d", i)
		checkChain(t, all, sid)
		for _, ev := range all {
			if !strings.Contains(string(ev), `"sid":"`+sid+`"`) || !strings.Contains(string(ev), `"type":"db.session.end"`) {
				continue
			}
			unsealed, sig := Unsealed(ev)
			if sig == "" || !strings.Contains(string(unsealed), `"signer":"`+signer.CertB64()+`"`) {
				t.Fatalf("session end not sealed: %s", ev)
			}
			if err := VerifySignature(signer.Cert, unsealed, sig); err != nil {
				t.Fatalf("seal of %s: %v", sid, err)
			}
			sealed++
		}
	}
	if sealed != sessions {
		t.Fatalf("%d sessions sealed, want %d", sealed, sessions)
	}
}

// A frame that went out unsigned (within signEvery of a signed one) is
// followed, once the writer is idle, by a signed frame without events that
// proves it.
func TestCheckpointSignsTheTail(t *testing.T) {
	s := startStore(t, t.TempDir())
	signer := testSigner(t)
	p := newTestPublisher(t, s.js, WithSigner(signer))
	for ei := range 2 {
		if err := p.Publish(context.Background(), queryEvent("sessk", uint64(ei))); err != nil {
			t.Fatal(err)
		}
	}
	var frames []*Frame
	waitUntil(t, 5*time.Second, "the run's last frame signed", func() bool {
		frames = s.stored(t)
		return frames[len(frames)-1].Trailer != nil
	})
	if frames[0].Trailer == nil {
		t.Fatal("the run's first frame is not signed")
	}
	if frames[1].Trailer != nil {
		// The machine took longer than signEvery between the two: both
		// signed, no checkpoint needed.
		if len(frames) != 2 {
			t.Fatalf("%d frames after two signed ones", len(frames))
		}
		return
	}
	cp := frames[2]
	if len(frames) != 3 || cp.Header.N != 0 || len(cp.Events) != 0 || cp.Header.Prev != frames[1].Hash() || cp.Header.FSeq != 2 {
		t.Fatalf("checkpoint %+v of %d frames", cp.Header, len(frames))
	}
	if err := VerifySignature(signer.Cert, cp.Signed, cp.Trailer.Sig); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * signEvery)
	if n := len(s.stored(t)); n != 3 {
		t.Fatalf("%d frames: a signed tail got another checkpoint", n)
	}
}

// A strict publish that timed out leaves its events with the publisher,
// which stores them once the store is back: the caller is told so (ErrHeld)
// and need not, and must not, publish them again.
func TestHeldEventsStoredOnceAfterOutage(t *testing.T) {
	s := startTCPStore(t, t.TempDir())
	p := newTestPublisher(t, s.js, WithAckTimeout(200*time.Millisecond))
	if err := p.Publish(context.Background(), queryEvent("sesst", 0)); err != nil {
		t.Fatal(err)
	}
	s.stopServer()
	err := p.PublishBatch(context.Background(), []Event{queryEvent("sesst", 1), queryEvent("sesst", 2)})
	if !errors.Is(err, ErrAuditUnavailable) || !errors.Is(err, ErrHeld) {
		t.Fatalf("publish with the server down: %v", err)
	}
	s.restartServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, queryEvent("sesst", 3)); err != nil {
		t.Fatal(err)
	}
	evs := s.storedEvents(t)
	if len(evs) != 4 {
		t.Fatalf("stream holds %d events, want 4", len(evs))
	}
	checkChain(t, evs, "sesst")
	t.Logf("stats %+v", p.Stats())
}

// A full backlog refuses a strict publish at once, without accepting it:
// the caller may publish the same events again later.
func TestStrictRefusedWhenBacklogFull(t *testing.T) {
	s := startTCPStore(t, t.TempDir())
	p := newTestPublisher(t, s.js, WithAckTimeout(100*time.Millisecond), WithQueueSize(4))
	s.stopServer()
	for i := range 4 {
		if err := p.Publish(context.Background(), queryEvent("sessf", uint64(i))); !errors.Is(err, ErrHeld) {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	err := p.Publish(context.Background(), queryEvent("sessf", 4))
	if !errors.Is(err, ErrAuditUnavailable) || errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "backlog is full") {
		t.Fatalf("publish past the backlog: %v", err)
	}
	s.restartServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, queryEvent("sessf", 4)); err != nil {
		t.Fatal(err)
	}
	evs := s.storedEvents(t)
	if len(evs) != 5 {
		t.Fatalf("stream holds %d events, want 5", len(evs))
	}
	checkChain(t, evs, "sessf")
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
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "audit store unavailable: no acknowledgement from JetStream within 300ms") {
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
	frames := s.stored(t)
	if len(frames) != 1 || len(frames[0].Events) != 1 {
		t.Fatalf("%d frames stored", len(frames))
	}
	if size := len(frames[0].Signed) + len("Nats-Msg-Id: ") + len(ev.ID) + len("audit.test.frame.") + len(p.Source()); size > limit {
		t.Fatalf("message is %d bytes, limit %d", size, limit)
	}
	data := frames[0].Events[0]
	var stored map[string]any
	if err := json.Unmarshal(data, &stored); err != nil {
		t.Fatal(err)
	}
	if stored["id"] != ev.ID || stored["sid"] != "sessl" || stored["ei"] != 3.0 || stored["db_user"] != "app" {
		t.Fatalf("envelope changed: %v", stored)
	}
	if stored["db_query_truncated"] != true || stored["db_query_parameters_truncated"] != true {
		t.Fatalf("truncation not marked: %s", data)
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
	if n := len(s.storedEvents(t)); n != writers*each {
		t.Fatalf("stream holds %d events, %d were published", n, writers*each)
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
	evs := s.storedEvents(t)
	if len(evs) != 50 {
		t.Fatalf("stream holds %d events, want 50", len(evs))
	}
	checkChain(t, evs, "sesso")
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

// A session closed without its end event leaves no chain behind.
func TestEndChainForgetsTheSession(t *testing.T) {
	s := startStore(t, t.TempDir())
	p := newTestPublisher(t, s.js)
	if err := p.Publish(context.Background(), queryEvent("sessr", 0)); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.chains.Load("sessr"); !ok {
		t.Fatal("no chain kept for a live session")
	}
	p.EndChain("sessr")
	if _, ok := p.chains.Load("sessr"); ok {
		t.Fatal("the chain of a closed session is kept")
	}
	if err := p.Publish(context.Background(), &SessionEnd{Session: Session{SID: "sesse", EI: 0}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.chains.Load("sesse"); ok {
		t.Fatal("the chain of an ended session is kept")
	}
}
