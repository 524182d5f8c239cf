package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
)

// memRecorder stores events in memory and fails while down is set.
type memRecorder struct {
	mu     sync.Mutex
	down   bool
	stored []events.Event
	ids    map[string]bool
	calls  int
}

func (r *memRecorder) Publish(ctx context.Context, ev events.Event) error {
	return r.PublishBatch(ctx, []events.Event{ev})
}

func (r *memRecorder) PublishBatch(_ context.Context, evs []events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.down {
		return fmt.Errorf("nats: no responders: %w", errors.New("audit store unavailable"))
	}
	if r.ids == nil {
		r.ids = map[string]bool{}
	}
	for _, ev := range evs {
		if id := ev.Header().ID; !r.ids[id] {
			r.ids[id] = true
			r.stored = append(r.stored, ev)
		}
	}
	return nil
}

func (r *memRecorder) setDown(d bool) {
	r.mu.Lock()
	r.down = d
	r.mu.Unlock()
}

func (r *memRecorder) events() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Event(nil), r.stored...)
}

// ofType returns the stored events of type T.
func ofType[T any](r *memRecorder) []*T {
	var out []*T
	for _, ev := range r.events() {
		if t, ok := ev.(any).(*T); ok {
			out = append(out, t)
		}
	}
	return out
}

// pipeSession is a proxy between a pgproto3 Frontend (the client) and a
// pgproto3 Backend (the database), over net.Pipe.
type pipeSession struct {
	rec      *memRecorder
	sess     *agent.Session
	fe       *pgproto3.Frontend
	be       *pgproto3.Backend
	client   net.Conn // test's end towards the agent
	server   net.Conn // test's end as the database
	done     chan error
	cancelFn context.CancelFunc
	// pendingFlush reports the database side's last write.
	pendingFlush chan error
}

func newPipeSession(t *testing.T, strict bool) *pipeSession {
	t.Helper()
	mode := "strict"
	if !strict {
		mode = "async"
	}
	db, err := agent.NewDatabase(config.Database{Name: "pg", Protocol: "postgres", URI: "127.0.0.1:1", AuditMode: mode, TLS: config.DatabaseTLS{Mode: "insecure"}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &memRecorder{}
	ctx, cancel := context.WithCancel(context.Background())
	sess := agent.NewSession(agent.SessionOptions{Cluster: "c", Recorder: rec, Database: db,
		Identity: identity.Identity{User: "alice", Roles: []string{"dev"}}, DBUser: "app", DBName: "appdb", Background: ctx})
	cTest, cAgent := net.Pipe()
	sAgent, sTest := net.Pipe()
	e := New(Options{MaxMessage: 1 << 20, MaxCopyData: 1 << 20})
	p := &proxy{Relay: agent.Relay{Tally: agent.Tally{Started: time.Now()}, Sess: sess, Client: cAgent}, e: e}
	ps := &pipeSession{rec: rec, sess: sess, client: cTest, server: sTest, done: make(chan error, 1), cancelFn: cancel,
		fe: pgproto3.NewFrontend(cTest, cTest), be: pgproto3.NewBackend(sTest, sTest)}
	go func() { ps.done <- p.run(ctx, &upstream{conn: sAgent, r: sAgent}) }()
	t.Cleanup(func() {
		cTest.Close()
		sTest.Close()
		select {
		case <-ps.done:
		case <-time.After(5 * time.Second):
			t.Error("proxy did not end")
		}
		cancel()
	})
	return ps
}

func (ps *pipeSession) send(t *testing.T, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	for _, m := range msgs {
		ps.fe.Send(m)
	}
	errc := make(chan error, 1)
	go func() { errc <- ps.fe.Flush() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("client write blocked")
	}
}

func (ps *pipeSession) reply(t *testing.T, msgs ...pgproto3.BackendMessage) {
	t.Helper()
	// The backend's buffer is not safe for a Send while the previous
	// Flush runs: it would send the previous messages again.
	if ps.pendingFlush != nil {
		select {
		case err := <-ps.pendingFlush:
			if err != nil {
				t.Fatalf("database side: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the agent did not read the previous reply")
		}
		ps.pendingFlush = nil
	}
	for _, m := range msgs {
		ps.be.Send(m)
	}
	errc := make(chan error, 1)
	go func() { errc <- ps.be.Flush() }()
	// The agent writes what it reads to the client, which must read for
	// the pipe to move: the caller receives with clientReceive.
	ps.pendingFlush = errc
}

func (ps *pipeSession) serverReceive(t *testing.T) pgproto3.FrontendMessage {
	t.Helper()
	return receive(t, "database side", ps.server, ps.be.Receive)
}

// receive reads a message with recv from conn's side within 5s.
func receive[M any](t *testing.T, side string, conn net.Conn, recv func() (M, error)) M {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := recv()
	if err != nil {
		t.Fatalf("%s: %v", side, err)
	}
	return m
}

// serverGetsNothing asserts that nothing reaches the database side.
func (ps *pipeSession) serverGetsNothing(t *testing.T) {
	t.Helper()
	_ = ps.server.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	m, err := ps.be.Receive()
	if err == nil {
		t.Fatalf("the database received %T %+v", m, m)
	}
	var ne net.Error
	closed := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.ErrClosedPipe)
	if !closed && (!errors.As(err, &ne) || !ne.Timeout()) {
		t.Fatalf("database side: %v", err)
	}
	_ = ps.server.SetReadDeadline(time.Time{})
	// A timed out pgproto3 reader is unusable; start a fresh one.
	ps.be = pgproto3.NewBackend(ps.server, ps.server)
}

func (ps *pipeSession) clientReceive(t *testing.T) pgproto3.BackendMessage {
	t.Helper()
	return receive(t, "client side", ps.client, ps.fe.Receive)
}
