package state

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// replayEvents is the number of STATE events BenchmarkReplay replays:
// TOLLGATE_REPLAY_EVENTS, or a million.
func replayEvents(b *testing.B) int {
	n := 1_000_000
	if v := os.Getenv("TOLLGATE_REPLAY_EVENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			b.Fatalf("TOLLGATE_REPLAY_EVENTS=%q: want a number of events, at least 100", v)
		}
	}
	return n
}

// filler appends small, valid STATE events: users created then updated,
// locks created and deleted, join tokens created and used; the mix a
// long-lived cluster accumulates. It publishes asynchronously, many in
// flight, so the fill is not the slow part, and it can stop and go on.
type filler struct {
	openLocks []string
	tokens    []string
	last      map[string]uint64 // subject -> its last sequence, as the server tracks it
}

func fillState(b *testing.B, js jetstream.JetStream, n int) {
	(&filler{}).fill(b, js, 0, n)
}

// fill appends events from to to-1; event i is stored at sequence i+1.
func (f *filler) fill(b *testing.B, js jetstream.JetStream, from, to int) {
	b.Helper()
	const users = 10_000
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if f.last == nil {
		f.last = map[string]uint64{}
	}
	openLocks, tokens, last := f.openLocks, f.tokens, f.last
	defer func() { f.openLocks, f.tokens = openLocks, tokens }()
	pending := 0
	publish := func(ev events.Event, subj string, i int) {
		h := ev.Header()
		h.User, h.Roles = "admin", []string{"editor"}
		h.Time = t0.Add(time.Duration(i) * time.Millisecond)
		if err := events.Stamp(ev, "bench"); err != nil {
			b.Fatal(err)
		}
		data, err := json.Marshal(ev)
		if err != nil {
			b.Fatal(err)
		}
		// The headers the Store sends are stored with the message and
		// parsed again on replay, so the fill sends them too. One
		// publisher's messages are stored in order: event i gets sequence
		// i+1.
		msg := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, h.ID)
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(last[subj], 10))
		last[subj] = uint64(i) + 1
		if _, err := js.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
		pending++
		if pending == 4096 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("async publish did not complete within a minute")
			}
			pending = 0
		}
	}
	for i := from; i < to; i++ {
		switch {
		case i < users:
			name := fmt.Sprintf("user%05d", i)
			publish(&events.UserCreate{Name: name, UserRoles: []string{"access"},
				Traits: map[string][]string{"db_users": {name}, "db_names": {"app"}}}, subject(AggUser, name), i)
		default:
			switch k := i % 10; {
			case k < 4:
				name := fmt.Sprintf("user%05d", i%users)
				publish(&events.UserUpdate{Name: name, UserRoles: []string{"access", "requester"},
					Traits: map[string][]string{"db_users": {name, "ro_" + strconv.Itoa(i%7)}, "db_names": {"app"}}}, subject(AggUser, name), i)
			case k < 6:
				id := events.NewID()
				openLocks = append(openLocks, id)
				publish(&events.LockCreate{LockID: id, TargetUser: fmt.Sprintf("user%05d", i%users), Message: "incident"}, subject(AggLock, id), i)
			case k < 8 && len(openLocks) > 0:
				id := openLocks[0]
				openLocks = openLocks[1:]
				publish(&events.LockDelete{LockID: id}, subject(AggLock, id), i)
			case k < 9 || len(tokens) == 0:
				id := TokenID(strconv.Itoa(i))
				tokens = append(tokens, id)
				publish(&events.TokenCreate{TokenID: id, TokenType: TokenDB, Expires: t0.Add(time.Hour), SingleUse: true}, subject(AggToken, id), i)
			default:
				id := tokens[len(tokens)-1]
				tokens = tokens[:len(tokens)-1]
				publish(&events.TokenUse{Status: events.Status{Success: true}, TokenID: id, TokenType: TokenDB, HostID: "host-1"}, subject(AggToken, id), i)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("async publish did not complete within a minute")
	}
}

// BenchmarkReplay measures how long a broker or agent takes to replay the
// whole of STATE into its projection, and the heap it needs. (With a
// snapshot, a restart replays much less: BenchmarkRestartFromSnapshot.)
//
//	go test -run '^$' -bench Replay -benchtime 1x ./broker/state/
//	TOLLGATE_REPLAY_EVENTS=100000 go test -run '^$' -bench Replay -benchtime 1x ./broker/state/
func BenchmarkReplay(b *testing.B) {
	n := replayEvents(b)
	// TOLLGATE_REPLAY_DIR keeps the filled store between runs, so a replay
	// can be measured again without filling a million events each time.
	dir := os.Getenv("TOLLGATE_REPLAY_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	srv := startServer(b, dir)
	js := srv.connect(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// A restarted broker finds no recent message ids in the server's
	// duplicate window; a short window lets the server forget the fill's
	// million ids before the replay is measured, as it would have.
	cfg := events.StateStreamConfig(events.StreamOptions{})
	cfg.Duplicates = time.Second
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	info, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		b.Fatal(err)
	}
	switch have := info.CachedInfo().State.Msgs; have {
	case 0:
		fillStart := time.Now()
		fillState(b, js, n)
		b.Logf("filled %d events in %s", n, time.Since(fillStart).Round(time.Millisecond))
		time.Sleep(2 * time.Second)
	case uint64(n):
		b.Logf("replaying the %d events already in %s", n, dir)
	default:
		b.Fatalf("%s holds %d STATE events, want none or %d", dir, have, n)
	}

	var peak, base uint64
	var totalSecs, totalCPU float64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base = ms.HeapAlloc
		var maxHeap atomic.Uint64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			var ms runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					runtime.ReadMemStats(&ms)
					if ms.HeapAlloc > maxHeap.Load() {
						maxHeap.Store(ms.HeapAlloc)
					}
				}
			}
		}()
		rjs := srv.connect(b)
		b.StartTimer()

		start, cpu0 := time.Now(), cpuTime()
		p, err := Follow(ctx, rjs, FromScratch())
		if err != nil {
			b.Fatal(err)
		}
		elapsed, cpu := time.Since(start), cpuTime()-cpu0

		b.StopTimer()
		close(stop)
		wg.Wait()
		totalSecs += elapsed.Seconds()
		totalCPU += cpu.Seconds()
		if got := p.Seq(); got != uint64(n) {
			b.Fatalf("replayed to sequence %d, want %d", got, n)
		}
		skipped, lastErr := p.Stats()
		if skipped != 0 {
			b.Fatalf("%d events skipped: %v", skipped, lastErr)
		}
		if lastErr != nil {
			b.Logf("consumer reported: %v", lastErr)
		}
		if len(p.Users()) != min(n, 10_000) {
			b.Fatalf("%d users", len(p.Users()))
		}
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc > maxHeap.Load() {
			maxHeap.Store(ms.HeapAlloc)
		}
		peak = max(peak, maxHeap.Load())
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.Logf("replay %d: %s (CPU %s, server and client), %.0f events/s, peak heap %.0f MB (%.0f MB before), retained after GC %.0f MB",
			i, elapsed.Round(time.Millisecond), cpu.Round(time.Millisecond), float64(n)/elapsed.Seconds(), mb(maxHeap.Load()), mb(base), mb(ms.HeapAlloc))
		runtime.KeepAlive(p)
		p.Close()
		b.StartTimer()
	}
	b.ReportMetric(totalSecs/float64(b.N), "s/replay")
	b.ReportMetric(totalCPU/float64(b.N), "cpu-s/replay")
	b.ReportMetric(float64(n)*float64(b.N)/totalSecs, "events/s")
	b.ReportMetric(mb(peak), "peak-heap-MB")
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

// BenchmarkRestartFromSnapshot measures a restart of a broker or agent
// whose STATE holds a million events: it loads the snapshot the broker
// wrote at the last multiple of DefaultSnapshotEvery and replays the rest
// (the worst case, a tail of DefaultSnapshotEvery-1 events, is at most
// twice this tail).
//
//	go test -run '^$' -bench RestartFromSnapshot -benchtime 1x ./broker/state/
func BenchmarkRestartFromSnapshot(b *testing.B) {
	n := replayEvents(b)
	at := n - n%DefaultSnapshotEvery
	if at == n {
		at = n - DefaultSnapshotEvery/2
	}
	if at <= 0 {
		at = n / 2
	}
	srv := startServer(b, b.TempDir())
	js := srv.connect(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := events.StateStreamConfig(events.StreamOptions{})
	cfg.Duplicates = time.Second
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	f := &filler{}
	f.fill(b, js, 0, at)
	p, err := Follow(ctx, srv.connect(b), FromScratch())
	if err != nil {
		b.Fatal(err)
	}
	obs, err := js.CreateOrUpdateObjectStore(ctx, snapshotsConfig(1))
	if err != nil {
		b.Fatal(err)
	}
	if seq, err := p.writeSnapshot(ctx, obs); err != nil || seq != uint64(at) {
		b.Fatalf("snapshot at %d: %v", seq, err)
	}
	p.Close()
	f.fill(b, js, at, n)
	time.Sleep(2 * time.Second)
	b.Logf("%d events, snapshot at %d, tail of %d", n, at, n-at)

	var totalSecs, totalCPU float64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		runtime.GC()
		rjs := srv.connect(b)
		b.StartTimer()
		start, cpu0 := time.Now(), cpuTime()
		p, err := Follow(ctx, rjs)
		if err != nil {
			b.Fatal(err)
		}
		elapsed, cpu := time.Since(start), cpuTime()-cpu0
		b.StopTimer()
		totalSecs += elapsed.Seconds()
		totalCPU += cpu.Seconds()
		if p.Seq() != uint64(n) || p.SnapshotSeq() != uint64(at) {
			b.Fatalf("at %d from snapshot %d, want %d from %d", p.Seq(), p.SnapshotSeq(), n, at)
		}
		if _, lastErr := p.Stats(); lastErr != nil {
			b.Fatal(lastErr)
		}
		b.Logf("restart %d: %s (CPU %s)", i, elapsed.Round(time.Millisecond), cpu.Round(time.Millisecond))
		p.Close()
		b.StartTimer()
	}
	b.ReportMetric(totalSecs/float64(b.N), "s/restart")
	b.ReportMetric(totalCPU/float64(b.N), "cpu-s/restart")
}
