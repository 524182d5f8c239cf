package events

import (
	"time"
)

// Stats counts what a Publisher did.
type Stats struct {
	// Published counts messages (frames) sent to JetStream, resends
	// included.
	Published uint64
	// Acked counts events JetStream acknowledged as stored.
	Acked uint64
	// Frames counts frames stored.
	Frames uint64
	// Duplicates counts acknowledgements of a frame stored before.
	Duplicates uint64
	// Retried counts frames sent again after a failure.
	Retried uint64
	// Truncated counts events whose large fields were cut.
	Truncated uint64
	// Blocked is the total time Publish waited for room in a full backlog.
	Blocked time.Duration
	// QueueLen is the number of events accepted and not yet in a frame.
	QueueLen int
	// Pending is the number of events accepted and not yet stored.
	Pending int64
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() Stats {
	s := Stats{
		Published:  p.published.Load(),
		Acked:      p.acked.Load(),
		Frames:     p.frames.Load(),
		Duplicates: p.duplicates.Load(),
		Retried:    p.retried.Load(),
		Truncated:  p.truncated.Load(),
		Blocked:    time.Duration(p.blocked.Load()),
	}
	p.mu.Lock()
	s.QueueLen, s.Pending = len(p.open), int64(p.backlog)
	p.mu.Unlock()
	return s
}
