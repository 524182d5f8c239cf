package login

import (
	"testing"
	"time"
)

func TestLimiterBucket(t *testing.T) {
	l := newLimiter(Limit{Burst: 5, Per: time.Minute})
	now := time.Unix(1_000_000, 0)
	if w := l.wait("u", now); w != 0 {
		t.Fatalf("fresh key waits %s", w)
	}
	for i := 1; i <= 4; i++ {
		if w := l.fail("u", now); w != 0 {
			t.Fatalf("failure %d leaves a wait of %s", i, w)
		}
	}
	if w := l.fail("u", now); w != 12*time.Second {
		t.Fatalf("5th failure: wait %s, want 12s (5 a minute)", w)
	}
	if w := l.wait("u", now.Add(6*time.Second)); w != 6*time.Second {
		t.Fatalf("6s later: wait %s, want 6s", w)
	}
	if w := l.wait("u", now.Add(12*time.Second)); w != 0 {
		t.Fatalf("12s later: wait %s, want 0", w)
	}
	if w := l.wait("other", now); w != 0 {
		t.Fatalf("another key waits %s", w)
	}
	// A full minute refills the whole burst, and pruning drops it.
	l.prune(now.Add(time.Minute))
	if len(l.buckets) != 0 {
		t.Fatalf("%d buckets after refilling", len(l.buckets))
	}
	if got := retrySeconds(1500 * time.Millisecond); got != 2 {
		t.Fatalf("retrySeconds(1.5s) = %d", got)
	}
}
