package natsserver

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// BenchmarkPublishIdentity is the strict publisher's batch of 16 events
// on an open server and on one where the agent's identity and permissions
// apply: authentication is per connection, and the permission check per
// published subject is cached by the server, so the two should cost the
// same per event.
func BenchmarkPublishIdentity(b *testing.B) {
	for _, withAuth := range []bool{false, true} {
		name := "open"
		if withAuth {
			name = "agent-identity"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			o := Options{StoreDir: filepath.Join(dir, "js"), Listen: InProcessOnly}
			if withAuth {
				creds, err := LoadOrCreateCredentials(filepath.Join(dir, "auth"))
				if err != nil {
					b.Fatal(err)
				}
				o.Auth = creds
			}
			s, err := Start(o)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Shutdown()
			bnc, err := s.ConnectAs(Broker)
			if err != nil {
				b.Fatal(err)
			}
			bjs, _ := jetstream.New(bnc)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := events.EnsureStreams(ctx, bjs, events.StreamOptions{}); err != nil {
				b.Fatal(err)
			}
			nc, err := s.ConnectAs(Agent)
			if err != nil {
				b.Fatal(err)
			}
			js, _ := jetstream.New(nc)
			p, err := events.NewPublisher(js, "bench")
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close(context.Background())
			const n = 16
			qs := make([]*events.Query, n)
			evs := make([]events.Event, n)
			query := make([]byte, 300)
			for i := range query {
				query[i] = 'x'
			}
			for i := range qs {
				qs[i] = &events.Query{Session: events.Session{SID: "01JBENCHSESSION00000000000"}, Query: string(query)}
				evs[i] = qs[i]
			}
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime()
			for i := range b.N {
				for j, q := range qs {
					q.ID, q.Time, q.EI = "", time.Time{}, uint64(i*n+j)
				}
				if err := p.PublishBatch(context.Background(), evs); err != nil {
					b.Fatal(err)
				}
			}
			elapsed, cpu := time.Since(start), cpuTime()-cpu0
			b.StopTimer()
			b.ReportMetric(float64(b.N*n)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N*n), "cpu-µs/event")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
