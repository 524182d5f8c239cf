package exportertest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// FrameSrc is the writer the test frames claim to come from.
const FrameSrc = "h1"

// frameRun is the state of the test writer's run: frames are chained as
// a real writer chains them.
type frameRun struct {
	run  string
	fseq uint64
	prev string
}

// Encode stamps ev (unless it is already) and encodes it as the AUDIT
// stream stores it.
func Encode(t testing.TB, ev events.Event) []byte {
	t.Helper()
	if ev.Header().ID == "" {
		if err := events.Stamp(ev, Cluster); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Frame publishes encoded events as one frame, the next of the test
// writer's run, and returns its stream sequence.
func (e *Env) Frame(t testing.TB, evs ...[]byte) uint64 {
	t.Helper()
	e.frameMu.Lock()
	defer e.frameMu.Unlock()
	if e.frames.run == "" {
		e.frames.run = events.NewID()
		e.frames.prev = events.FrameGenesis(e.frames.run)
	}
	h := events.FrameHeader{ID: events.NewID(), Src: FrameSrc, Run: e.frames.run, FSeq: e.frames.fseq, Prev: e.frames.prev}
	data, hash, err := events.EncodeFrame(nil, h, evs, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("audit." + Cluster + "." + events.FrameSubject + "." + FrameSrc)
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, h.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ack, err := e.JS.PublishMsg(ctx, m)
	if err != nil {
		t.Fatalf("publish frame %d: %v", h.FSeq, err)
	}
	e.frames.fseq++
	e.frames.prev = hash
	return ack.Sequence
}

// Single publishes one event the way every event was stored before
// frames: a message of its own under its type's subject.
func (e *Env) Single(t testing.TB, ev events.Event) uint64 {
	t.Helper()
	b := Encode(t, ev)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ack, err := e.JS.Publish(ctx, events.AuditSubject(ev), b, jetstream.WithMsgID(ev.Header().ID))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// FillFrames publishes n events made by mk (Query when nil, spread over
// five sessions so frames hold several) in frames of 1 to 100 events, with
// now and then a single event stored the old way between them. It
// returns the ids in stream order.
func (e *Env) FillFrames(t testing.TB, n int, mk func(i int) events.Event) []string {
	t.Helper()
	if mk == nil {
		mk = func(i int) events.Event {
			q := Query(i)
			q.SID = fmt.Sprintf("s%05d", i%5)
			return q
		}
	}
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	ids := make([]string, 0, n)
	for i := 0; i < n; {
		if rng.IntN(4) == 0 {
			ev := mk(i)
			e.Single(t, ev)
			ids = append(ids, ev.Header().ID)
			i++
			continue
		}
		size := min(1+rng.IntN(100), n-i)
		evs := make([][]byte, size)
		for k := range evs {
			ev := mk(i + k)
			evs[k] = Encode(t, ev)
			ids = append(ids, ev.Header().ID)
		}
		e.Frame(t, evs...)
		i += size
	}
	return ids
}
