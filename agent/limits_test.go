package agent

import (
	"errors"
	"strings"
	"testing"
)

func TestConnLimits(t *testing.T) {
	var l connLimits
	r1, err := l.acquire(3, 2, "alice")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := l.acquire(3, 2, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.acquire(3, 2, "alice"); !errors.Is(err, ErrTooManyConnections) || !strings.Contains(err.Error(), "max_connections_per_user") {
		t.Fatalf("third of alice: %v, want the per-user limit", err)
	}
	r3, err := l.acquire(3, 2, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.acquire(3, 2, "carol"); !errors.Is(err, ErrTooManyConnections) || !strings.Contains(err.Error(), "db_service.max_connections)") {
		t.Fatalf("fourth connection: %v, want the agent limit", err)
	}
	r1()
	r1() // a second release counts once
	if _, err := l.acquire(3, 2, "carol"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	r2()
	r3()
	if _, err := l.acquire(0, 0, "dave"); err != nil {
		t.Fatalf("no limits: %v", err)
	}
	if l.total != 2 || l.byUser["alice"] != 0 || l.byUser["carol"] != 1 {
		t.Fatalf("counts: total %d, by user %v", l.total, l.byUser)
	}
}

// BenchmarkConnLimits is the cost the limits add to every connection.
func BenchmarkConnLimits(b *testing.B) {
	var l connLimits
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			release, err := l.acquire(1<<30, 1<<30, "alice")
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
	})
}
