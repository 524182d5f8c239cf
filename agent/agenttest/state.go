package agenttest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/state"
)

// Locks is a control plane with one lock that a test turns on: the
// agent.StateSource of Agent.State for the tests of a lock ending a
// session.
type Locks struct {
	seq    atomic.Uint64
	mu     sync.Mutex
	locked *state.Lock
}

func (l *Locks) Seq() uint64 { return l.seq.Load() }

func (l *Locks) LockedOut(_ time.Time, user string, _ []string, _ string) (state.Lock, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.locked != nil && l.locked.TargetUser == user {
		return *l.locked, true
	}
	return state.Lock{}, false
}

func (l *Locks) AccessRequest(string) (state.AccessRequest, bool) {
	return state.AccessRequest{}, false
}

func (l *Locks) ResolveRoles([]string) ([]access.Role, []string) { return nil, nil }

// Lock locks user out with msg.
func (l *Locks) Lock(user, msg string) {
	l.mu.Lock()
	l.locked = &state.Lock{ID: "lk1", TargetUser: user, Message: msg, Created: time.Now()}
	l.mu.Unlock()
	l.seq.Add(1)
}

// LockWait locks user out with msg and waits, polling every 5 ms, until
// stopped holds; it fails the test when what has not happened within
// timeout, and returns how long the lock took to stop the session.
func (l *Locks) LockWait(t testing.TB, user, msg string, timeout time.Duration, what string, stopped func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	l.Lock(user, msg)
	for !stopped() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s of the lock", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}
