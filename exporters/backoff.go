package exporters

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is the wait before attempt (0-based): exponential from
// BackoffMin to BackoffMax, with jitter so replicas do not retry in step.
func (x *Exporter) backoff(attempt int) time.Duration {
	d := x.d.BackoffMin.Std()
	for i := 0; i < attempt && d < x.d.BackoffMax.Std(); i++ {
		d *= 2
	}
	if d > x.d.BackoffMax.Std() {
		d = x.d.BackoffMax.Std()
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
