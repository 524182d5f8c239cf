package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// trail is an embedded NATS server with the streams, and what the tests
// stored in AUDIT: every event (the oracle of List and Load) and, per
// session, how many messages hold its events.
type trail struct {
	t      testing.TB
	js     jetstream.JetStream
	all    [][]byte
	frames map[string]int
	fseq   uint64
	prev   string
}

func newTrail(t testing.TB) *trail {
	t.Helper()
	dir := t.TempDir()
	s, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(dir, "js"), Listen: natsserver.InProcessOnly})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.EnsureStreams(tctx(t), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return &trail{t: t, js: js, frames: map[string]int{}, prev: events.FrameGenesis("r1")}
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// frame stores evs as one frame, as the writer does.
func (tr *trail) frame(evs ...[]byte) {
	tr.t.Helper()
	h := events.FrameHeader{ID: events.NewID(), Src: "h1", Run: "r1", FSeq: tr.fseq, Prev: tr.prev}
	data, hash, err := events.EncodeFrame(nil, h, evs, nil)
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.fseq, tr.prev = tr.fseq+1, hash
	m := nats.NewMsg("audit.c1." + events.FrameSubject + ".h1")
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, h.ID)
	if _, err := tr.js.PublishMsg(tctx(tr.t), m); err != nil {
		tr.t.Fatal(err)
	}
	tr.stored(evs...)
}

// legacy stores ev alone under its session's subject, as before frames.
func (tr *trail) legacy(ev []byte) {
	tr.t.Helper()
	var r sessionFields
	if err := json.Unmarshal(ev, &r); err != nil {
		tr.t.Fatal(err)
	}
	sid := r.SID
	if sid == "" {
		sid = events.NoSession
	}
	if _, err := tr.js.Publish(tctx(tr.t), "audit.c1."+sid+"."+r.Type, ev); err != nil {
		tr.t.Fatal(err)
	}
	tr.stored(ev)
}

func (tr *trail) stored(evs ...[]byte) {
	seen := map[string]bool{}
	for _, ev := range evs {
		tr.all = append(tr.all, ev)
		if sid := eventSID(ev); sid != "" && !seen[sid] {
			seen[sid] = true
			tr.frames[sid]++
		}
	}
}

// want is the session list an in-memory projection of every stored event
// gives.
func (tr *trail) want() []Session {
	p := NewProjection()
	for _, ev := range tr.all {
		_ = p.Apply(ev)
	}
	return p.Sessions(Filter{})
}

// events are the stored events of sid.
func (tr *trail) events(sid string) [][]byte {
	var out [][]byte
	for _, ev := range tr.all {
		if eventSID(ev) == sid {
			out = append(out, ev)
		}
	}
	return out
}

func asJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkList asserts that List gives what the events say.
func (tr *trail) checkList(what string) []Session {
	tr.t.Helper()
	got, err := List(tctx(tr.t), tr.js, Filter{})
	if err != nil {
		tr.t.Fatalf("%s: list: %v", what, err)
	}
	if g, w := asJSON(tr.t, got), asJSON(tr.t, tr.want()); g != w {
		tr.t.Fatalf("%s: list\n%s\nwant\n%s", what, g, w)
	}
	return got
}

// checkLoad asserts that Load gives the timeline of sid's events and
// returns how many AUDIT messages it fetched.
func (tr *trail) checkLoad(what, sid string) int {
	tr.t.Helper()
	var fetched atomic.Int64
	onFetch = func(uint64) { fetched.Add(1) }
	defer func() { onFetch = nil }()
	got, err := Load(tctx(tr.t), tr.js, sid)
	if err != nil {
		tr.t.Fatalf("%s: load %s: %v", what, sid, err)
	}
	want, err := FromEvents(tr.events(sid))
	if err != nil {
		tr.t.Fatal(err)
	}
	if g, w := asJSON(tr.t, got), asJSON(tr.t, want); g != w {
		tr.t.Fatalf("%s: load %s\n%s\nwant\n%s", what, sid, g, w)
	}
	for i, e := range got.Entries {
		if e.EI != uint64(i) {
			tr.t.Fatalf("%s: load %s: entry %d has ei %d", what, sid, i, e.EI)
		}
	}
	return int(fetched.Load())
}

func (tr *trail) lastSeq() uint64 {
	tr.t.Helper()
	s, err := tr.js.Stream(tctx(tr.t), events.AuditStream)
	if err != nil {
		tr.t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

func (tr *trail) startIndex() *Index {
	tr.t.Helper()
	ix, err := StartIndex(tctx(tr.t), tr.js, IndexOptions{Every: 20 * time.Millisecond})
	if err != nil {
		tr.t.Fatal(err)
	}
	if err := ix.Sync(tctx(tr.t)); err != nil {
		tr.t.Fatal(err)
	}
	return ix
}

func (tr *trail) entry(sid string) indexed {
	tr.t.Helper()
	kv, err := tr.js.KeyValue(tctx(tr.t), IndexBucket)
	if err != nil {
		tr.t.Fatal(err)
	}
	var e indexed
	if ok, err := getJSON(tctx(tr.t), kv, summaryKey(indexKey(sid)), &e); err != nil || !ok {
		tr.t.Fatalf("entry %s: found %v, %v", sid, ok, err)
	}
	return e
}

func TestIndex(t *testing.T) {
	tr := newTrail(t)
	s1 := sample(t) // ends with its end event
	s2 := session(t, "S2",
		&events.SessionStart{Database: db, Status: events.Status{Success: true}},
		&events.Query{Database: db, Query: "select 1"},
		&events.Result{Database: db, Status: events.Status{Success: true}, CommandTag: "SELECT 3", Rows: 3},
		&events.Query{Database: db, Query: "select 1/0"},
		&events.Result{Database: db, Status: events.Status{Success: false}, ErrorCode: "22012"},
		&events.SessionEnd{Database: db, Reason: "client", Statements: 2, Rows: 3, Errors: 1},
	)
	other := events.Database{Service: "my1", Protocol: "mysql", URI: "x"}
	denied := session(t, "S3:odd/sid", &events.SessionStart{Database: other, Status: events.Status{Success: false, Error: "access denied"}})
	old := session(t, "S4",
		&events.SessionStart{Database: db, Status: events.Status{Success: true}},
		&events.Query{Database: db, Query: "select 4"},
		&events.Result{Database: db, Status: events.Status{Success: true}, CommandTag: "SELECT 1", Rows: 1},
		&events.SessionEnd{Database: db, Reason: "client", Statements: 1, Rows: 1},
	)
	outside := []byte(`{"id":"X1","type":"exporter.dead_letter","time":"2026-01-02T03:04:05Z"}`)

	// Before frames: single events, S4's and one outside any session.
	for _, ev := range old {
		tr.legacy(ev)
	}
	tr.legacy(outside)
	// Frames: S1 and S2 interleaved, S2 left live, and frames without S1.
	tr.frame(s1[0], s2[0], s1[1], s1[2])
	tr.frame(s2[1], s2[2])
	tr.frame(s1[3], s2[3], s1[4], s1[5], outside)
	tr.frame(denied[0], s2[4])
	tr.frame(s1[6], s1[7], s1[8])

	// No index yet: a stream from before it is read whole.
	tr.checkList("no index")
	tr.checkLoad("no index", "S1")

	ix := tr.startIndex()
	live := tr.checkList("indexed")
	if i := slices.IndexFunc(live, func(s Session) bool { return s.SID == "S2" }); i < 0 || !live[i].Live() || live[i].Statements != 2 || live[i].Errors != 1 {
		t.Fatalf("S2 live: %+v", live)
	}
	// S1 is live too: its newest messages are read after the indexed ones.
	if n := tr.checkLoad("live", "S1"); n != tr.frames["S1"] {
		t.Fatalf("load S1 read %d messages, %d hold its events (stream %d)", n, tr.frames["S1"], tr.lastSeq())
	}
	tr.frame(s1[9], s2[5])
	if err := ix.Sync(tctx(t)); err != nil {
		t.Fatal(err)
	}
	tr.checkList("ended")
	for _, sid := range []string{"S1", "S2"} {
		e := tr.entry(sid)
		if e.End.IsZero() || e.Frames != uint64(tr.frames[sid]) || e.LastSeq != tr.lastSeq() {
			t.Fatalf("%s entry: %+v, want ended, %d frames, last seq %d", sid, e, tr.frames[sid], tr.lastSeq())
		}
	}
	// Replay reads exactly the messages holding the session's events.
	for _, sid := range []string{"S1", "S2", "S3:odd/sid", "S4"} {
		if n := tr.checkLoad("ended", sid); n != tr.frames[sid] {
			t.Fatalf("load %s read %d messages, %d hold its events (stream %d)", sid, n, tr.frames[sid], tr.lastSeq())
		}
	}
	if n := len(tr.events("S1")); tr.frames["S1"] >= n || tr.lastSeq() <= uint64(tr.frames["S1"]) {
		t.Fatalf("the test wants S1 in fewer frames (%d) than events (%d), and other messages", tr.frames["S1"], n)
	}

	// The index behind (stopped): what it has not read is read by List
	// and Load, a session it never saw too.
	ix.Stop()
	s5 := session(t, "S5", &events.SessionStart{Database: db, Status: events.Status{Success: true}},
		&events.Query{Database: db, Query: "select 5"})
	tr.frame(s5[0], s5[1])
	tr.checkList("behind")
	if n := tr.checkLoad("behind", "S5"); n != 1 {
		t.Fatalf("load S5 read %d messages, want the one after the index", n)
	}

	// A restart reads on from its progress and counts nothing twice.
	ix = tr.startIndex()
	info, err := ix.cons.Info(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.OptStartSeq != tr.lastSeq() {
		t.Fatalf("restarted at %d, want %d (the message after the progress)", info.Config.OptStartSeq, tr.lastSeq())
	}
	tr.checkList("restarted")
	ix.Stop()

	// Progress lost after the entries were written (a crash between the
	// two): every message is read again, no session counts one twice.
	kv, err := tr.js.KeyValue(tctx(t), IndexBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(tctx(t), progressKey, []byte(`{"seq":0}`)); err != nil {
		t.Fatal(err)
	}
	ix = tr.startIndex()
	defer ix.Stop()
	tr.checkList("read again")
	for _, sid := range []string{"S1", "S2", "S5"} {
		if e := tr.entry(sid); e.Frames != uint64(tr.frames[sid]) {
			t.Fatalf("%s: %d frames after reading again, want %d", sid, e.Frames, tr.frames[sid])
		}
	}
}

// A long session's messages span several chunks, across a restart.
func TestIndexLongSession(t *testing.T) {
	tr := newTrail(t)
	evs := []events.Event{&events.SessionStart{Database: db, Status: events.Status{Success: true}}}
	const n = chunkSize + chunkSize/2 + 7
	for i := 1; i < n; i++ {
		evs = append(evs, &events.Query{Database: db, Query: fmt.Sprintf("select %d", i)})
	}
	long := session(t, "L", evs...)
	noise := session(t, "N", &events.SessionStart{Database: db, Status: events.Status{Success: true}})
	for i, ev := range long {
		if i == chunkSize/2 {
			tr.frame(ev, noise[0])
		} else {
			tr.frame(ev)
		}
		if i%50 == 0 {
			tr.legacy(noise[0]) // messages of another session between
		}
	}
	ix := tr.startIndex()
	ix.Stop()
	more := session(t, "L", append(evs, &events.Query{Database: db, Query: "select last"},
		&events.SessionEnd{Database: db, Reason: "client"})...)[n:]
	for _, ev := range more {
		tr.frame(ev)
	}
	ix = tr.startIndex()
	defer ix.Stop()
	tr.checkList("long")
	if e := tr.entry("L"); e.chunks() != 2 || e.Frames != uint64(tr.frames["L"]) {
		t.Fatalf("entry: %d chunks, %d frames, want 2 and %d", e.chunks(), e.Frames, tr.frames["L"])
	}
	if got := tr.checkLoad("long", "L"); got != tr.frames["L"] {
		t.Fatalf("load read %d messages, want %d", got, tr.frames["L"])
	}
}

func TestIndexEmpty(t *testing.T) {
	tr := newTrail(t)
	ix := tr.startIndex()
	defer ix.Stop()
	if ss, err := List(tctx(t), tr.js, Filter{}); err != nil || len(ss) != 0 {
		t.Fatalf("list: %v, %v", ss, err)
	}
	if _, err := Load(tctx(t), tr.js, "S1"); err == nil || !strings.Contains(err.Error(), "no session S1") {
		t.Fatalf("load: %v", err)
	}
	tr.frame(sample(t)[:2]...)
	if err := ix.Sync(tctx(t)); err != nil {
		t.Fatal(err)
	}
	tr.checkList("first frame")
	if n := tr.checkLoad("first frame", "S1"); n != 1 {
		t.Fatalf("load read %d messages", n)
	}
}

// The consumer deleted under the index: it makes a new one and reads on
// from where it was.
func TestIndexConsumerLost(t *testing.T) {
	tr := newTrail(t)
	s1 := sample(t)
	tr.frame(s1[:4]...)
	ix := tr.startIndex()
	defer ix.Stop()
	stream, err := tr.js.Stream(tctx(t), events.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.DeleteConsumer(tctx(t), IndexConsumer); err != nil {
		t.Fatal(err)
	}
	tr.frame(s1[4:]...)
	if err := ix.Sync(tctx(t)); err != nil {
		t.Fatal(err)
	}
	tr.checkList("consumer lost")
	if e := tr.entry("S1"); e.Frames != 2 || e.End.IsZero() {
		t.Fatalf("entry: %+v", e)
	}
}

// logLines is a log handler's output, for tests to wait for a line.
type logLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.b.String(), s)
}

// Several brokers: one keeps the index, another takes over when it stops,
// when its lease lapses, or after losing it.
func TestIndexTwoBrokers(t *testing.T) {
	tr := newTrail(t)
	s1, s2 := sample(t), session(t, "S2", &events.SessionStart{Database: db, Status: events.Status{Success: true}},
		&events.Query{Database: db, Query: "select 2"}, &events.Result{Database: db, Status: events.Status{Success: true}, Rows: 2})
	tr.frame(s1[:3]...)
	first := tr.startIndex()
	var log2 logLines
	second, err := StartIndex(tctx(t), tr.js, IndexOptions{Every: 20 * time.Millisecond, Log: slog.New(slog.NewTextHandler(&log2, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Stop()
	tr.frame(s1[3:6]...)
	if err := second.Sync(tctx(t)); err != nil { // the first keeps it
		t.Fatal(err)
	}
	tr.checkList("first broker")
	if log2.has("keeping it") {
		t.Fatal("the second broker keeps the index beside the first")
	}
	first.Stop()
	tr.frame(s1[6], s2[0])
	if err := second.Sync(tctx(t)); err != nil {
		t.Fatal(err)
	}
	if !log2.has("keeping it") {
		t.Fatal("the second broker did not take over")
	}
	tr.checkList("second broker")

	// The lease taken by someone else: the second stops writing; given
	// back, it keeps the index again from the progress.
	kv, err := tr.js.KeyValue(tctx(t), IndexBucket)
	if err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if _, err := kv.Put(tctx(t), leaseKey, []byte(`{"holder":"other","until":"`+until+`"}`)); err != nil {
		t.Fatal(err)
	}
	for !log2.has("lease lost") {
		select {
		case <-tctx(t).Done():
			t.Fatal("the second broker did not see its lease lost")
		case <-time.After(10 * time.Millisecond):
		}
	}
	tr.frame(s1[7:]...)
	tr.frame(s2[1:]...)
	// A lease that lapsed (its holder gone) is taken over.
	if _, err := kv.Put(tctx(t), leaseKey, []byte(`{"holder":"other","until":"2000-01-01T00:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}
	if err := second.Sync(tctx(t)); err != nil {
		t.Fatal(err)
	}
	tr.checkList("taken over again")
	for _, sid := range []string{"S1", "S2"} {
		if n := tr.checkLoad("taken over again", sid); n != tr.frames[sid] {
			t.Fatalf("load %s read %d messages, want %d", sid, n, tr.frames[sid])
		}
	}
}

func TestIndexKey(t *testing.T) {
	for sid, want := range map[string]string{
		"01JABC-x_y": "01JABC-x_y",
		"a:b/c=d":    "a=3Ab=2Fc=3Dd",
		"é":          "=C3=A9",
	} {
		if got := indexKey(sid); got != want {
			t.Errorf("indexKey(%q) = %q, want %q", sid, got, want)
		}
	}
	if !strings.HasPrefix(summaryKey(indexKey("x")), "s.") {
		t.Fatal("summary keys are under s.")
	}
}

// BenchmarkIndexFrame measures what the index does per AUDIT message: a
// frame of 32 events of 4 sessions read into their entries (no writes: a
// save comes every few seconds, not per frame).
func BenchmarkIndexFrame(b *testing.B) {
	var evs [][]byte
	for s := range 4 {
		for _, ev := range sample(b)[:8] {
			evs = append(evs, []byte(strings.ReplaceAll(string(ev), `"sid":"S1"`, fmt.Sprintf(`"sid":"S%d"`, s))))
		}
	}
	data, _, err := events.EncodeFrame(nil, events.FrameHeader{ID: "f", Src: "h1", Run: "r1", Prev: events.FrameGenesis("r1")}, evs, nil)
	if err != nil {
		b.Fatal(err)
	}
	ix := &Index{live: map[string]*tracked{}}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := range b.N {
		if err := ix.apply(ctx, uint64(i)+1, data); err != nil {
			b.Fatal(err)
		}
		if len(ix.live["S0"].seqs) >= 4*chunkSize {
			for _, t := range ix.live {
				t.seqs = t.seqs[:0] // as a save does
			}
		}
	}
	b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkIndexCatchUp measures the index reading AUDIT from the embedded
// server: frames of 32 events of 8 interleaved sessions, read, saved and
// acknowledged (per op: one frame).
func BenchmarkIndexCatchUp(b *testing.B) {
	tr := newTrail(b)
	base := sample(b)
	var frame [][]byte
	for s := range 8 {
		for _, ev := range base[1:5] {
			frame = append(frame, []byte(strings.ReplaceAll(string(ev), `"sid":"S1"`, fmt.Sprintf(`"sid":"S%d"`, s))))
		}
	}
	for i := range b.N {
		h := events.FrameHeader{ID: events.NewID(), Src: "h1", Run: "r1", FSeq: uint64(i), Prev: tr.prev}
		data, hash, err := events.EncodeFrame(nil, h, frame, nil)
		if err != nil {
			b.Fatal(err)
		}
		tr.prev = hash
		if _, err := tr.js.PublishAsync("audit.c1.frame.h1", data); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-tr.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("frames not stored")
	}
	b.ResetTimer()
	ix, err := StartIndex(tctx(b), tr.js, IndexOptions{Every: 20 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	if err := ix.Sync(tctx(b)); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	ix.Stop()
	b.ReportMetric(float64(b.N*len(frame))/b.Elapsed().Seconds(), "events/s")
}
