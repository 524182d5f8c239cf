package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// lineCodec is a protocol small enough to read at a glance: a client
// message is a 4-byte big-endian length and a body, the server answers
// each with a line. A body "BAD" is malformed.
type lineCodec struct {
	r *Relay
	q *Pending[string]
	// lines counts the server's complete lines; inLine: a line began.
	inLine bool
	// refusing is told when a refusal waits for the server's answers.
	refusing chan struct{}
}

func (c *lineCodec) Decode(ctx context.Context, b []byte) (consumed, need int, err error) {
	var (
		evs     []events.Event
		entries []string
		segs    []Segment
	)
	flush := func() error {
		if len(entries) == 0 {
			return nil
		}
		ae, err := c.r.Gate(ctx, evs...)
		if err != nil {
			return err
		}
		if ae != nil {
			c.refusing <- struct{}{}
			c.r.Refusal()
			return c.r.WriteClient(bytes.Repeat([]byte("REFUSED\n"), len(entries)))
		}
		c.q.Push(entries, uint64(len(entries)))
		c.r.Send(b, segs)
		return nil
	}
	for {
		rest := b[consumed:]
		if len(rest) < 4 {
			need = 4
			break
		}
		n := 4 + int(binary.BigEndian.Uint32(rest))
		if len(rest) < n {
			need = n
			break
		}
		body := string(rest[4:n])
		if body == "BAD" {
			if err := flush(); err != nil {
				return consumed, 0, err
			}
			return consumed, 0, &Malformed{Event: &events.MalformedPacket{Direction: "client", Reason: "bad body", Length: int64(n)},
				Ending: "malformed client message: bad body", Wait: true, Reply: []byte("MALFORMED\n")}
		}
		evs = append(evs, &events.Query{Query: body[:min(len(body), 16)]})
		entries = append(entries, body)
		segs = append(segs, Segment{From: consumed, To: consumed + n})
		consumed += n
	}
	return consumed, need, flush()
}

func (c *lineCodec) ClientClosed(err error, rest []byte) *Malformed {
	if len(rest) > 0 && errors.Is(err, io.EOF) {
		return &Malformed{Event: &events.MalformedPacket{Direction: "client", Reason: "truncated"}, Ending: "truncated"}
	}
	return nil
}

func (c *lineCodec) Scan(b []byte) ([]byte, uint64, error) {
	var answers uint64
	for _, x := range b {
		c.inLine = x != '\n'
		if x == '\n' {
			c.q.Pop()
			answers++
		}
	}
	return b, answers, nil
}

func (c *lineCodec) Termination(_, message string) []byte {
	if c.inLine {
		return nil
	}
	return []byte("BYE " + message + "\n")
}

type relayWorld struct {
	rec    *fakeRecorder
	relay  *Relay
	codec  *lineCodec
	client net.Conn // the test as the client
	server net.Conn // the test as the database
	cr     *bufio.Reader
	done   chan error
}

func newRelayWorld(t *testing.T) *relayWorld {
	t.Helper()
	rec := &fakeRecorder{}
	sess := testSession(t, rec, "strict")
	cTest, cRelay := net.Pipe()
	sRelay, sTest := net.Pipe()
	r := &Relay{Tally: Tally{Started: time.Now()}, Sess: sess, Client: cRelay, Server: sRelay}
	codec := &lineCodec{r: r, q: &Pending[string]{}, refusing: make(chan struct{}, 1)}
	r.Codec, r.Queue = codec, codec.q
	w := &relayWorld{rec: rec, relay: r, codec: codec, client: cTest, server: sTest, cr: bufio.NewReader(cTest), done: make(chan error, 1)}
	go func() { w.done <- r.Run(context.Background(), nil, sRelay) }()
	t.Cleanup(func() {
		cTest.Close()
		sTest.Close()
		w.wait(t)
	})
	return w
}

func frame(body string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func (w *relayWorld) send(t *testing.T, b []byte) {
	t.Helper()
	go func() { _, _ = w.client.Write(b) }()
}

// serverGets reads n bytes as the database.
func (w *relayWorld) serverGets(t *testing.T, n int) []byte {
	t.Helper()
	_ = w.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, n)
	if _, err := io.ReadFull(w.server, got); err != nil {
		t.Fatalf("database side: %v", err)
	}
	return got
}

func (w *relayWorld) clientLine(t *testing.T) string {
	t.Helper()
	_ = w.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := w.cr.ReadString('\n')
	if err != nil {
		t.Fatalf("client side: %v", err)
	}
	return l
}

func (w *relayWorld) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-w.done:
		w.done <- err
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("the relay did not end")
		return nil
	}
}

func TestRelayGrowsForALongMessageAndForwardsItWhole(t *testing.T) {
	w := newRelayWorld(t)
	long := strings.Repeat("x", 3*ClientBuffer+17)
	msg := append(frame(long), frame("short")...)
	w.send(t, msg)
	if got := w.serverGets(t, len(msg)); !bytes.Equal(got, msg) {
		t.Fatal("the database did not get the messages as sent")
	}
	go func() { _, _ = w.server.Write([]byte("one\ntwo\n")) }()
	if l := w.clientLine(t) + w.clientLine(t); l != "one\ntwo\n" {
		t.Fatalf("client got %q", l)
	}
	var queries int
	for _, ev := range w.rec.all() {
		if _, ok := ev.(*events.Query); ok {
			queries++
		}
	}
	if queries != 2 {
		t.Fatalf("%d query events, want 2", queries)
	}
}

func TestRelayRefusalWaitsForTheServersAnswers(t *testing.T) {
	w := newRelayWorld(t)
	w.send(t, frame("first"))
	w.serverGets(t, len(frame("first")))
	w.rec.set(true)
	w.send(t, frame("second"))
	// The refusal may not overtake the answer to the first, which
	// the database gives once the refusal was decided.
	select {
	case <-w.codec.refusing:
	case <-time.After(5 * time.Second):
		t.Fatal("the batch was not refused")
	}
	go func() { _, _ = w.server.Write([]byte("first done\n")) }()
	if l := w.clientLine(t); l != "first done\n" {
		t.Fatalf("client got %q before the server's answer", l)
	}
	if l := w.clientLine(t); l != "REFUSED\n" {
		t.Fatalf("client got %q, want the refusal", l)
	}
}

func TestRelayMalformedIsRecordedAndNeverForwarded(t *testing.T) {
	w := newRelayWorld(t)
	good := frame("good")
	w.send(t, append(append(good, frame("BAD")...), frame("after")...))
	if got := w.serverGets(t, len(good)); !bytes.Equal(got, good) {
		t.Fatalf("database got %q", got)
	}
	go func() { _, _ = w.server.Write([]byte("ok\n")) }()
	if l := w.clientLine(t) + w.clientLine(t); l != "ok\nMALFORMED\n" {
		t.Fatalf("client got %q", l)
	}
	var m *Malformed
	if err := w.wait(t); !errors.As(err, &m) {
		t.Fatalf("relay ended with %v", err)
	}
	// Nothing after the malformed message reached the database.
	_ = w.server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _ := w.server.Read(make([]byte, 64)); n > 0 {
		t.Fatalf("the database got %d more bytes", n)
	}
	var found bool
	for _, ev := range w.rec.all() {
		if mp, ok := ev.(*events.MalformedPacket); ok && mp.Reason == "bad body" {
			found = true
		}
	}
	if !found {
		t.Fatal("no malformed packet event")
	}
	if end := w.relay.End(""); end.Reason != "malformed client message: bad body" {
		t.Fatalf("end reason %q", end.Reason)
	}
}

func TestRelayTerminationBetweenMessages(t *testing.T) {
	w := newRelayWorld(t)
	w.relay.Terminate(events.EndIdleTimeout, "idle for too long")
	if l := w.clientLine(t); l != "BYE idle for too long\n" {
		t.Fatalf("client got %q", l)
	}
	// A pipe closed under its reader says so unlike a TCP connection:
	// the error is not the point here.
	_ = w.wait(t)
	if end := w.relay.End(""); end.Reason != events.EndIdleTimeout {
		t.Fatalf("end reason %q", end.Reason)
	}
}

func TestPendingLimitAndEdit(t *testing.T) {
	q := &Pending[int]{Limit: 1}
	if q.Full() || !q.Idle() {
		t.Fatal("an empty queue is full or busy")
	}
	q.Push([]int{7}, 1)
	if !q.Full() || q.Idle() || !q.Busy() {
		t.Fatal("one request does not fill a queue of limit 1")
	}
	var head int
	q.Edit(func(items []int) int { head = items[0]; return 1 })
	if head != 7 || q.Len() != 0 || q.Full() {
		t.Fatalf("head %d, len %d", head, q.Len())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if q.WaitIdleCtx(ctx) {
		t.Fatal("idle before its answer")
	}
	q.Answered(1)
	q.WaitIdle()
	if _, ok := q.Pop(); ok {
		t.Fatal("popped from an empty queue")
	}
}
