package agent

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
)

// fakeState holds locks in memory; seq changes on every call so every
// check also checks locks (the worst case).
type fakeState struct {
	seq   uint64
	locks []state.Lock
}

func (f *fakeState) Seq() uint64 { f.seq++; return f.seq }

func (f *fakeState) LockedOut(now time.Time, user string, roles []string, sid string) (state.Lock, bool) {
	for _, l := range f.locks {
		if l.Matches(now, user, roles, sid) {
			return l, true
		}
	}
	return state.Lock{}, false
}

func (f *fakeState) CurrentIdentity(_ time.Time, id identity.Identity) (identity.Identity, error) {
	return id, nil
}

func (f *fakeState) AccessRequest(string) (state.AccessRequest, bool) {
	return state.AccessRequest{}, false
}

func (f *fakeState) ResolveRoles(names []string) ([]access.Role, []string) { return nil, names }

// BenchmarkLifecycleCheck is one tick of the lifecycle over 1000 live
// connections and 50 locks that match none of them: what the agent spends
// every interval (50ms) to end sessions within one.
func BenchmarkLifecycleCheck(b *testing.B) {
	src := &fakeState{}
	for i := 0; i < 50; i++ {
		src.locks = append(src.locks, state.Lock{ID: fmt.Sprint(i), TargetUser: fmt.Sprint("locked-", i)})
	}
	l := NewLifecycle(src, LifecycleOptions{})
	const conns = 1000
	for i := 0; i < conns; i++ {
		a, c := net.Pipe()
		b.Cleanup(func() { a.Close(); c.Close() })
		cc := &ClientConn{Conn: a, Identity: identity.Identity{User: fmt.Sprint("user-", i), Roles: []string{"dev"}, Expires: time.Now().Add(time.Hour)}}
		l.admit(cc, newActivityConn(a))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.check()
	}
	b.ReportMetric(float64(b.N*conns)/b.Elapsed().Seconds(), "sessions/s")
}
