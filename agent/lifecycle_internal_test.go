package agent

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

type memRecorder struct {
	mu  sync.Mutex
	evs []events.Event
}

func (m *memRecorder) Publish(ctx context.Context, ev events.Event) error {
	return m.PublishBatch(ctx, []events.Event{ev})
}

func (m *memRecorder) PublishBatch(_ context.Context, evs []events.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evs = append(m.evs, evs...)
	return nil
}

// TestLifecycleWithoutEngineHook: an engine that never hands over a
// TerminateFunc still has its connection closed by a lock, once past the
// startup grace; one that does gets the reason and message, and the
// session gets its db.session.terminate event.
func TestLifecycleWithoutEngineHook(t *testing.T) {
	src := &fakeState{}
	now := time.Now()
	l := NewLifecycle(src, LifecycleOptions{Now: func() time.Time { return now }})
	env := &Env{life: l}

	a, peer := net.Pipe()
	defer peer.Close()
	plain := &ClientConn{Conn: a, Identity: identity.Identity{User: "mysql-user"}, Env: env}
	stop := l.admit(plain, newActivityConn(a))
	defer stop()

	b, peer2 := net.Pipe()
	defer peer2.Close()
	hooked := &ClientConn{Conn: b, Identity: identity.Identity{User: "pg-user", Roles: []string{"dev"}}, Env: env}
	stop2 := l.admit(hooked, newActivityConn(b))
	defer stop2()
	rec := &memRecorder{}
	sess := NewSession(SessionOptions{Cluster: "c", Recorder: rec, Identity: hooked.Identity})
	type call struct{ reason, message string }
	calls := make(chan call, 2)
	hooked.OnTerminate(sess, func(reason, message string) { calls <- call{reason, message} })

	src.locks = []state.Lock{{ID: "L1", TargetUser: "mysql-user", Message: "m1"}, {ID: "L2", TargetRole: "dev", Message: "m2"}}
	l.check()
	// Within the startup grace the plain connection is left to the access
	// decision; the hooked one ends at once.
	select {
	case c := <-calls:
		if c.reason != events.EndLocked || c.message != "session ended: role dev (held by pg-user) is locked: m2" {
			t.Fatalf("terminate(%q, %q)", c.reason, c.message)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the hooked session was not terminated")
	}
	<-sess.Close(nil)
	rec.mu.Lock()
	if len(rec.evs) != 1 || rec.evs[0].(*events.SessionTerminate).LockID != "L2" {
		t.Fatalf("events %+v", rec.evs)
	}
	rec.mu.Unlock()

	now = now.Add(startupGrace)
	l.check()
	_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the plain connection was not closed: %v", err)
	}
	// Each connection ends once.
	l.check()
	select {
	case c := <-calls:
		t.Fatalf("terminated twice: %v", c)
	default:
	}
}
