package verify

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// BenchmarkStream is `tollgate audit verify` on an embedded AUDIT stream of
// 200,000 events (2,000 sessions of 100, ~500 bytes each), read in-process:
// the aim is 1M events in under 10 s, so under 10 µs an event.
func BenchmarkStream(b *testing.B) {
	const sessions, per = 2000, 100
	s, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(b.TempDir(), "js"), Listen: natsserver.InProcessOnly})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Shutdown()
	nc, err := s.Connect()
	if err != nil {
		b.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		b.Fatal(err)
	}
	pad := strings.Repeat("x", 300)
	for i := range sessions {
		sid := fmt.Sprintf("01JSESSION%016d", i)
		for ei := range per {
			typ := "db.session.query"
			switch ei {
			case 0:
				typ = typeStart
			case per - 1:
				typ = typeEnd
			}
			data := fmt.Appendf(nil, `{"id":"%s-%d","type":%q,"code":"TGDB002I","time":"2026-01-01T00:00:00Z","cluster":"c","sid":%q,"ei":%d,"db_query":%q}`,
				sid, ei, typ, sid, ei, pad)
			if _, err := js.PublishAsync("audit.c."+sid+"."+typ, data); err != nil {
				b.Fatal(err)
			}
		}
		if i%50 == 49 {
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				b.Fatal(ctx.Err())
			}
		}
	}
	<-js.PublishAsyncComplete()
	b.ResetTimer()
	cpu0 := cpuTime()
	for range b.N {
		sum, err := Stream(ctx, js, StreamOptions{Stream: events.AuditStream})
		if err != nil {
			b.Fatal(err)
		}
		if !sum.Intact() || sum.Events != sessions*per {
			b.Fatalf("%s %v", sum.Line(), sum.Defects[:min(3, len(sum.Defects))])
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*sessions*per), "ns/event")
	// On a shared machine the wall clock says how busy it was; CPU time
	// (reader, client and the embedded server) says what an event costs.
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*sessions*per), "cpu-ns/event")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
