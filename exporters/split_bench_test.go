package exporters

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters/format"
	"github.com/tollgate-db/tollgate/test/harness"
)

// BenchmarkSplitFrame64 turns a fetched frame of 64 events into records
// (split, Scan, subject, native format): the exporter's cost per frame
// before the sink.
func BenchmarkSplitFrame64(b *testing.B) {
	const n = 64
	n1 := harness.NATS(b)
	nc, err := nats.Connect(n1.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		b.Fatal(err)
	}
	evs := make([][]byte, n)
	for i := range evs {
		q := &events.Query{
			Session:  events.Session{SID: fmt.Sprintf("s%d", i%4), EI: uint64(i)},
			Database: events.Database{Service: "pg-main", Protocol: "postgres", URI: "10.1.2.3:5432", User: "app", Name: "orders"},
			Query:    fmt.Sprintf("SELECT id, customer_id, total, created_at FROM orders WHERE customer_id = $1 /* %d */", i),
		}
		q.Envelope.User = "alice"
		if err := events.Stamp(q, "bench"); err != nil {
			b.Fatal(err)
		}
		if evs[i], err = json.Marshal(q); err != nil {
			b.Fatal(err)
		}
	}
	frame, _, err := events.EncodeFrame(nil, events.FrameHeader{ID: events.NewID(), Src: "h1", Run: "r1", Prev: events.FrameGenesis("r1")}, evs, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.Publish(ctx, "audit.bench.frame.h1", frame); err != nil {
		b.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, events.AuditStream, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	batch, err := cons.Fetch(1)
	if err != nil {
		b.Fatal(err)
	}
	var msg jetstream.Msg
	for m := range batch.Messages() {
		msg = m
	}
	if msg == nil {
		b.Fatal("no message fetched")
	}
	f, _ := format.New(format.Native, format.Options{})
	x := &Exporter{o: Options{Name: "bench", Format: f}, d: Delivery{BatchSize: DefaultBatchSize, AckWait: config.Duration(30 * time.Second)}, native: true}
	msgs := []jetstream.Msg{msg}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		ws := x.prepare(events.AuditStream, msgs, eventCount(frame))
		if len(ws) != 1 || len(ws[0].recs) != n {
			b.Fatalf("%d batches", len(ws))
		}
		ws[0].done()
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
}
