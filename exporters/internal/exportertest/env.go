// Package exportertest starts what the exporters' tests need: an embedded
// JetStream server with Tollgate's streams, a publisher, and events to
// fill the streams with.
package exportertest

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/format"
	"github.com/tollgate-db/tollgate/protocol"
	"github.com/tollgate-db/tollgate/test/harness"
)

// Cluster is the cluster name of the test events.
const Cluster = "test"

// Env is a JetStream server with the AUDIT and STATE streams.
type Env struct {
	NATS *harness.NATSServer
	NC   *nats.Conn
	JS   jetstream.JetStream
	// Pub publishes events (async, for speed); Strict waits for each.
	Pub    *events.Publisher
	Strict *events.Publisher

	// frames chains the frames Frame publishes.
	frameMu sync.Mutex
	frames  frameRun
}

// Options configures Start.
type Options struct {
	// MaxPayload of the server; 1 MiB when zero.
	MaxPayload int32
}

// Start starts the server and makes the streams.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	n := harness.NATSWith(t, func(so *server.Options) {
		if o.MaxPayload > 0 {
			so.MaxPayload = o.MaxPayload
		}
		so.JetStreamMaxStore = 8 << 30
	})
	return Connect(t, n)
}

// Connect connects to a running server and makes the streams.
func Connect(t testing.TB, n *harness.NATSServer) *Env {
	t.Helper()
	nc, err := nats.Connect(n.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	e := &Env{NATS: n, NC: nc, JS: js}
	if e.Pub, err = events.NewPublisher(js, Cluster, events.WithMode(events.ModeAsync), events.WithQueueSize(1<<16)); err != nil {
		t.Fatal(err)
	}
	if e.Strict, err = events.NewPublisher(js, Cluster); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.Pub.Close(ctx)
		_ = e.Strict.Close(ctx)
	})
	return e
}

// Query is a typical statement event of about 400 bytes, numbered i.
func Query(i int) *events.Query {
	q := &events.Query{
		Session:    events.Session{SID: fmt.Sprintf("s%05d", i/100), EI: uint64(i % 100)},
		Database:   events.Database{Service: "pg-main", Protocol: protocol.Postgres, URI: "10.1.2.3:5432", User: "app", Name: "orders"},
		Query:      fmt.Sprintf("SELECT id, customer_id, total, created_at FROM orders WHERE customer_id = $1 AND created_at > now() - interval '30 days' /* %d */", i),
		Parameters: []string{strconv.Itoa(i)},
	}
	q.Envelope.User = "alice"
	q.Roles = []string{"access", "analyst"}
	return q
}

// Fill publishes n events made by mk (Query when nil) and waits until all
// are stored; it returns their ids in order.
func (e *Env) Fill(t testing.TB, n int, mk func(i int) events.Event) []string {
	t.Helper()
	if mk == nil {
		mk = func(i int) events.Event { return Query(i) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ids := make([]string, n)
	for i := 0; i < n; i++ {
		ev := mk(i)
		if err := e.Pub.Publish(ctx, ev); err != nil {
			t.Fatalf("publish event %d: %v", i, err)
		}
		ids[i] = ev.Header().ID
	}
	if err := e.Pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return ids
}

// Settled waits until exporter name's consumers have nothing pending or
// unacknowledged in every stream it reads.
func (e *Env) Settled(t testing.TB, name string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok := true
		var parts []string
		for _, s := range []string{events.AuditStream, events.StateStream} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := e.JS.Consumer(ctx, s, exporters.ConsumerName(name))
			if err != nil {
				cancel()
				ok = false
				parts = append(parts, fmt.Sprintf("%s: %v", s, err))
				continue
			}
			ci, err := c.Info(ctx)
			cancel()
			if err != nil {
				ok = false
				continue
			}
			parts = append(parts, fmt.Sprintf("%s: pending %d, ack pending %d", s, ci.NumPending, ci.NumAckPending))
			if ci.NumPending != 0 || ci.NumAckPending != 0 {
				ok = false
			}
		}
		last = strings.Join(parts, "; ")
		if ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("exporter %s not settled after %s: %s", name, timeout, last)
}

// DeadLetters returns the messages exporter name dead-lettered.
func (e *Env) DeadLetters(t testing.TB, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.JS.Stream(ctx, exporters.DeadLetterStream)
	if err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject("deadletter."+name+".>"))
		if err != nil {
			break
		}
		out = append(out, m)
		seq = m.Sequence + 1
	}
	return out
}

// AuditEvents returns the stored events of one type, raw, whether they
// are stored one per message or in frames.
func (e *Env) AuditEvents(t testing.TB, typ string) [][]byte {
	t.Helper()
	var out [][]byte
	e.EachEvent(t, func(_ uint64, ev []byte) {
		if env, err := format.Scan(ev); err == nil && env.Type == typ {
			out = append(out, bytes.Clone(ev))
		}
	})
	return out
}

// EachEvent calls fn with every event stored in AUDIT, in stream order,
// and the sequence of the message holding it: a frame's events one by
// one.
func (e *Env) EachEvent(t testing.TB, fn func(seq uint64, ev []byte)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := e.JS.Stream(ctx, events.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(0); seq < info.State.LastSeq; {
		// Asking for no more than are left returns as soon as they are
		// there (gaps in the sequence only make it wait the max).
		batch, err := c.Fetch(int(min(1000, info.State.LastSeq-seq)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			seq = md.Sequence.Stream
			if err := events.SplitEvents(m.Data(), func(ev []byte) error { fn(seq, ev); return nil }); err != nil {
				t.Fatalf("message %d: %v", seq, err)
			}
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if got == 0 {
			t.Fatalf("AUDIT: nothing after sequence %d, the last is %d", seq, info.State.LastSeq)
		}
	}
}

// Build parses one exporter's configuration (the YAML of one item of
// exporters:, without the leading "- ") and builds it against e.
func (e *Env) Build(t testing.TB, exporterYAML string) (*exporters.Exporter, error) {
	t.Helper()
	c, err := config.Parse([]byte(exportersDoc(exporterYAML)))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exporters.Build(ctx, 0, c.Exporters[0], exporters.Deps{JS: e.JS, Publisher: e.Strict})
}

// Run builds the exporter and runs it until the test ends or stop is
// called; stop waits for it to finish.
func (e *Env) Run(t testing.TB, exporterYAML string) (x *exporters.Exporter, stop func()) {
	t.Helper()
	x, err := e.Build(t, exporterYAML)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("exporter %s: %v", x.Name(), err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("exporter %s did not stop within 30s", x.Name())
			}
		})
	}
	t.Cleanup(stop)
	return x, stop
}
