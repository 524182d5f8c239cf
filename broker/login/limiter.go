package login

import (
	"math"
	"sync"
	"time"
)

// Limit is how many failed logins a key (a user name, a source address) may
// have: Burst at once, then Burst per Per as the bucket refills.
type Limit struct {
	Burst int
	Per   time.Duration
}

// DefaultLimit allows 5 failed logins, then one more every 12 seconds (5 a
// minute). An online guesser gets 7,200 guesses a day per user at most,
// against passwords of at least 15 characters.
var DefaultLimit = Limit{Burst: 5, Per: time.Minute}

// limiter is a set of token buckets, one per key, that only failures drain.
// It is in memory: each broker limits on its own, and the user's lock-out
// in STATE (User.LockedUntil) carries a full bucket across brokers.
type limiter struct {
	mu      sync.Mutex
	limit   Limit
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// maxBuckets bounds the memory an attacker trying random user names can
// take; full buckets are dropped first, and they hold no information.
const maxBuckets = 100_000

func newLimiter(l Limit) *limiter {
	return &limiter{limit: l, buckets: map[string]*bucket{}}
}

func (l *limiter) rate() float64 { return float64(l.limit.Burst) / l.limit.Per.Seconds() }

// refill brings b up to now; called with l.mu held.
func (l *limiter) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(float64(l.limit.Burst), b.tokens+el*l.rate())
	}
	b.last = now
}

// wait is how long key must wait before another attempt: 0 when at least
// one failure is left.
func (l *limiter) wait(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		return 0
	}
	l.refill(b, now)
	return l.waitOf(b)
}

func (l *limiter) waitOf(b *bucket) time.Duration {
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) / l.rate() * float64(time.Second))
}

// fail takes one failure from key's bucket and returns the wait that
// leaves (0 while failures are left).
func (l *limiter) fail(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			l.prune(now)
		}
		b = &bucket{tokens: float64(l.limit.Burst), last: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	b.tokens = math.Max(0, b.tokens-1)
	return l.waitOf(b)
}

// prune drops the buckets that have refilled; called with l.mu held.
func (l *limiter) prune(now time.Time) {
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= float64(l.limit.Burst) {
			delete(l.buckets, k)
		}
	}
}

// retrySeconds rounds a wait up to whole seconds, at least 1.
func retrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
