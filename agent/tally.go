package agent

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// Tally counts a session's traffic and keeps why it ended, for the
// SessionEnd event an engine sends last. Engines embed it in their proxy;
// the counters are atomic because the client and server loops both add to
// them, and the reason is the first one given because whoever stops the
// session first (lifecycle, shutdown, either side closing) knows why.
type Tally struct {
	Statements, Rows, Errors, BytesIn, BytesOut atomic.Uint64
	// Started is when the session began, for the end event's duration.
	Started time.Time

	mu     sync.Mutex
	reason string
}

// SetReason records why the session ends, unless a reason was recorded
// before.
func (t *Tally) SetReason(r string) {
	t.mu.Lock()
	if t.reason == "" {
		t.reason = r
	}
	t.mu.Unlock()
}

// End is the session's last event: reason stands when no other was set
// before.
func (t *Tally) End(reason string) *events.SessionEnd {
	t.SetReason(reason)
	t.mu.Lock()
	r := t.reason
	t.mu.Unlock()
	return &events.SessionEnd{
		Reason: r, Statements: t.Statements.Load(), Rows: t.Rows.Load(), Errors: t.Errors.Load(),
		BytesIn: t.BytesIn.Load(), BytesOut: t.BytesOut.Load(), DurationNs: time.Since(t.Started).Nanoseconds(),
	}
}
