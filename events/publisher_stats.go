package events

import (
	"time"
)

// Stats counts what a Publisher did.
type Stats struct {
	// Published counts messages sent to JetStream, retries included.
	Published uint64
	// Acked counts events JetStream acknowledged as stored.
	Acked uint64
	// Duplicates counts acknowledgements of an id already stored.
	Duplicates uint64
	// Retried counts events sent again after a failure (async mode).
	Retried uint64
	// Truncated counts events whose large fields were cut.
	Truncated uint64
	// Blocked is the total time Publish waited for room in a full queue.
	Blocked time.Duration
	// QueueLen is the number of events queued and not yet sent.
	QueueLen int
	// Pending is the number of events accepted and not yet stored.
	Pending int64
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() Stats {
	s := Stats{
		Published:  p.published.Load(),
		Acked:      p.acked.Load(),
		Duplicates: p.duplicates.Load(),
		Retried:    p.retried.Load(),
		Truncated:  p.truncated.Load(),
		Blocked:    time.Duration(p.blocked.Load()),
		Pending:    p.pending.Load(),
	}
	if p.queue != nil {
		s.QueueLen = len(p.queue)
	}
	return s
}
