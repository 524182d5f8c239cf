package events

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The benchmarks publish 400-byte db.session.query events to an embedded
// JetStream server with file storage in b.TempDir, over an in-process
// connection (DESIGN.md §1, the budget).

func benchPublisher(b *testing.B, opts ...PublisherOption) (*testStore, *Publisher) {
	b.Helper()
	return benchPublisherOn(b, startStore(b, b.TempDir()), opts...)
}

func benchPublisherOn(b *testing.B, s *testStore, opts ...PublisherOption) (*testStore, *Publisher) {
	b.Helper()
	p, err := NewPublisher(s.js, "bench", opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			b.Error(err)
		}
	})
	return s, p
}

// fresh makes ev a new event again: Stamp gives it a new id and time.
func fresh(ev *Query, ei uint64) {
	ev.ID, ev.Time, ev.EI = "", time.Time{}, ei
}

func reportRate(b *testing.B, events int, elapsed time.Duration) {
	b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(events), "ns/event")
}

// cpuTime is the CPU time the whole process (publisher, client and the
// embedded server) has used. On a machine shared with other work the wall
// clock says how busy the machine was; CPU time per event says what an
// event costs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, events int, cpu time.Duration) {
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(events), "cpu-µs/event")
}

func reportP50(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

func BenchmarkPublishStrict(b *testing.B) {
	_, p := benchPublisher(b)
	benchStrict(b, p)
}

// BenchmarkPublishStrictTCP is BenchmarkPublishStrict over loopback TCP, as
// a process that does not embed the server would publish.
func BenchmarkPublishStrictTCP(b *testing.B) {
	_, p := benchPublisherOn(b, startTCPStore(b, b.TempDir()))
	benchStrict(b, p)
}

func benchStrict(b *testing.B, p *Publisher) {
	ctx := context.Background()
	ev := queryEvent("01JBENCHSESSION00000000000", 0)
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := range b.N {
		fresh(ev, uint64(i))
		t0 := time.Now()
		if err := p.Publish(ctx, ev); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	reportRate(b, b.N, elapsed)
	reportCPU(b, b.N, cpu)
	reportP50(b, lat)
}

func BenchmarkPublishStrictBatch16(b *testing.B) {
	_, p := benchPublisher(b)
	ctx := context.Background()
	const n = 16
	qs := make([]*Query, n)
	evs := make([]Event, n)
	for i := range qs {
		qs[i] = queryEvent("01JBENCHSESSION00000000000", 0)
		evs[i] = qs[i]
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := range b.N {
		for j, q := range qs {
			fresh(q, uint64(i*n+j))
		}
		t0 := time.Now()
		if err := p.PublishBatch(ctx, evs); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	reportRate(b, b.N*n, elapsed)
	reportCPU(b, b.N*n, cpu)
	reportP50(b, lat)
}

// BenchmarkPublishStrictParallel is many sessions at once, each waiting
// for its own acknowledgement (8 goroutines on this 2-core machine).
func BenchmarkPublishStrictParallel(b *testing.B) {
	_, p := benchPublisher(b)
	ctx := context.Background()
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		ev := queryEvent("01JBENCHSESSION00000000000", 0)
		var i uint64
		for pb.Next() {
			fresh(ev, i)
			i++
			if err := p.Publish(ctx, ev); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	reportRate(b, b.N, elapsed)
	reportCPU(b, b.N, cpu)
}

func BenchmarkPublishAsync(b *testing.B) {
	_, p := benchPublisher(b, WithMode(ModeAsync), WithQueueSize(DefaultQueueSize))
	ctx := context.Background()
	ev := queryEvent("01JBENCHSESSION00000000000", 0)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := range b.N {
		fresh(ev, uint64(i))
		if err := p.Publish(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
	// Counted only once every event is stored.
	if err := p.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	reportRate(b, b.N, elapsed)
	reportCPU(b, b.N, cpu)
	st := p.Stats()
	b.ReportMetric(float64(st.Blocked.Nanoseconds())/float64(b.N), "blocked-ns/event")
	b.ReportMetric(float64(st.Retried), "retried")
}

// BenchmarkEncode is the JSON encoding alone, the part of every publish
// that grows with the event: the compiled plan the publisher uses, and
// encoding/json for comparison.
func BenchmarkEncode(b *testing.B) {
	ev := queryEvent("01JBENCHSESSION00000000000", 0)
	if err := Stamp(ev, "bench"); err != nil {
		b.Fatal(err)
	}
	for _, enc := range []struct {
		name string
		fn   func([]byte, Event) ([]byte, error)
	}{{"plan", appendEvent}, {"encoding-json", appendJSON}} {
		b.Run(enc.name, func(b *testing.B) {
			var buf []byte
			b.ReportAllocs()
			for b.Loop() {
				var err error
				buf, err = enc.fn(buf[:0], ev)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

// BenchmarkBatch16Transport compares, for the same 16 encoded events, the
// publisher's ack pipe with the jetstream package's PublishMsgAsync and
// futures, so the choice of the pipe can be checked again when either side
// changes.
func BenchmarkBatch16Transport(b *testing.B) {
	const n = 16
	data, err := appendEvent(nil, func() Event { ev := queryEvent("01JBENCHSESSION00000000000", 0); _ = Stamp(ev, "bench"); return ev }())
	if err != nil {
		b.Fatal(err)
	}
	subject := "audit.bench.01JBENCHSESSION00000000000.db.session.query"
	run := func(b *testing.B, publish func(ms []*nats.Msg) error) {
		ms := make([]*nats.Msg, n)
		lat := make([]time.Duration, 0, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		start, cpu0 := time.Now(), cpuTime()
		for range b.N {
			for j := range ms {
				ms[j] = &nats.Msg{Subject: subject, Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{NewID()}}}
			}
			t0 := time.Now()
			if err := publish(ms); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		elapsed, cpu := time.Since(start), cpuTime()-cpu0
		b.StopTimer()
		reportRate(b, b.N*n, elapsed)
		reportCPU(b, b.N*n, cpu)
		reportP50(b, lat)
	}
	b.Run("pipe", func(b *testing.B) {
		s := startStore(b, b.TempDir())
		var (
			w    *waiter
			werr error
		)
		pipe, err := newAckPipe(s.nc, 5*time.Second, func(_ *outMsg, _ bool, err error) {
			if err != nil {
				werr = err
			}
			w.resolve()
		})
		if err != nil {
			b.Fatal(err)
		}
		defer pipe.close()
		outs := make([]outMsg, n)
		run(b, func(ms []*nats.Msg) error {
			w, werr = &waiter{done: make(chan struct{}, 1)}, nil
			w.left.Store(n)
			for j, m := range ms {
				outs[j].msg = *m
				if err := pipe.send(&outs[j]); err != nil {
					return err
				}
			}
			<-w.done
			return werr
		})
	})
	b.Run("jetstream-lib", func(b *testing.B) {
		s := startStore(b, b.TempDir())
		run(b, func(ms []*nats.Msg) error {
			futs := make([]jetstream.PubAckFuture, len(ms))
			for j, m := range ms {
				f, err := s.js.PublishMsgAsync(m)
				if err != nil {
					return err
				}
				futs[j] = f
			}
			for _, f := range futs {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					return err
				}
			}
			return nil
		})
	})
}

// BenchmarkFrameIngest is the store's side of group commit: frames of 64
// encoded events (the 400-byte query) published pipelined into the
// embedded server and acknowledged, as the writer sends them under load.
// events/s is what one node stores when its per-message cost is shared by
// a frame's events.
func BenchmarkFrameIngest(b *testing.B) {
	const perFrame = 64
	s := startStore(b, b.TempDir())
	evs := make([][]byte, perFrame)
	for i := range evs {
		ev := queryEvent("01JBENCHSESSION00000000000", uint64(i))
		if err := Stamp(ev, "bench"); err != nil {
			b.Fatal(err)
		}
		data, err := appendEvent(nil, ev)
		if err != nil {
			b.Fatal(err)
		}
		evs[i] = data
	}
	frame, _, err := EncodeFrame(nil, FrameHeader{ID: "F", Src: "bench", Run: "r"}, evs, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	const window = 64
	futs := make([]jetstream.PubAckFuture, 0, window)
	wait := func() {
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
		futs = futs[:0]
	}
	for i := range b.N {
		f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: "audit.bench.frame.bench", Data: frame,
			Header: nats.Header{jetstream.MsgIDHeader: []string{NewID()}}})
		if err != nil {
			b.Fatal(err)
		}
		futs = append(futs, f)
		if len(futs) == window || i == b.N-1 {
			wait()
		}
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	reportRate(b, b.N*perFrame, elapsed)
	reportCPU(b, b.N*perFrame, cpu)
}
