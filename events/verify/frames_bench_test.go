package verify

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// signedTrail is sessions×per chained, sealed events (~500 bytes each),
// ten sessions at a time interleaved as concurrent connections write
// them, in signed frames of 64 events from one writer run.
func signedTrail(b *testing.B, ca *testCA, sessions, per int) [][]byte {
	b.Helper()
	pad := strings.Repeat("x", 300)
	var evs [][]byte
	for g := 0; g < sessions; g += 10 {
		var group [][][]byte
		for i := g; i < min(g+10, sessions); i++ {
			group = append(group, chainedSession(b, ca.signer, fmt.Sprintf("01JSESSION%016d", i), per, t0, pad))
		}
		for k := range per {
			for _, s := range group {
				evs = append(evs, s[k])
			}
		}
	}
	return frames(b, ca.signer, "h1", "r1", evs, 64)
}

// BenchmarkVerifyFrames is the checker alone on signed frames: every
// frame signature, every event hash and link, every seal. The aim is 1M
// events in under 10 s with the reading (BenchmarkVerifyStream).
func BenchmarkVerifyFrames(b *testing.B) {
	const sessions, per = 1000, 100
	ca := newTestCA(b, "bench")
	msgs := signedTrail(b, ca, sessions, per)
	size := 0
	for _, m := range msgs {
		size += len(m)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for range b.N {
		s := checkMessages(Options{HostCA: ca.cert, Strict: true}, msgs)
		if !s.Intact() || s.Events != sessions*per || s.Sealed != sessions {
			b.Fatalf("%s\n%s", s.Line(), defectLines(s))
		}
	}
	b.ReportMetric(float64(b.N*sessions*per)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*sessions*per), "cpu-ns/event")
}

// BenchmarkVerifyStream is `tollgate audit verify` on an embedded AUDIT
// stream of 200,000 events in signed frames of 64, read in-process.
func BenchmarkVerifyStream(b *testing.B) {
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
	ca := newTestCA(b, "bench")
	for i, m := range signedTrail(b, ca, sessions, per) {
		f, err := events.DecodeFrame(m)
		if err != nil {
			b.Fatal(err)
		}
		msg := &nats.Msg{Subject: "audit.c." + events.FrameSubject + ".h1", Data: m, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, f.Header.ID)
		if _, err := js.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	b.ResetTimer()
	cpu0 := cpuTime()
	for range b.N {
		sum, err := Stream(ctx, js, StreamOptions{Stream: events.AuditStream, HostCA: ca.cert, Strict: true})
		if err != nil {
			b.Fatal(err)
		}
		if !sum.Intact() || sum.Events != sessions*per || sum.Sealed != sessions {
			b.Fatalf("%s %v", sum.Line(), sum.Defects[:min(3, len(sum.Defects))])
		}
	}
	b.ReportMetric(float64(b.N*sessions*per)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*sessions*per), "cpu-ns/event")
}
