package agent

import (
	"context"
	"sync"
)

// Pending pairs the commands forwarded to a database with its answers,
// which come in the same order: the client loop pushes, the server loop
// pops. Answers are counted apart from entries because a protocol may owe
// one answer for several of them (PostgreSQL's extended protocol is
// answered by one ReadyForQuery per Sync). The relay waits on the count
// so that the agent's own replies never overtake the server's.
//
// The zero value is an empty queue without a limit.
type Pending[E any] struct {
	// Limit, when above 0, bounds the entries awaiting an answer (Full):
	// SQL Server takes one request at a time.
	Limit int

	mu             sync.Mutex
	cond           *sync.Cond // made by the first wait
	items          []E
	head           int
	sent, answered uint64
	closed         bool
}

// wait waits for a change of the counts. q.mu held.
func (q *Pending[E]) wait() {
	if q.cond == nil {
		q.cond = sync.NewCond(&q.mu)
	}
	q.cond.Wait()
}

// wake ends the waits. q.mu held.
func (q *Pending[E]) wake() {
	if q.cond != nil {
		q.cond.Broadcast()
	}
}

// Push appends forwarded entries that are owed answers answers.
func (q *Pending[E]) Push(es []E, answers uint64) {
	q.mu.Lock()
	if q.head > 0 && q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	q.items = append(q.items, es...)
	q.sent += answers
	q.mu.Unlock()
}

// Pop takes the oldest entry awaiting its answer.
func (q *Pending[E]) Pop() (E, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var zero E
	if q.head == len(q.items) {
		return zero, false
	}
	e := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	return e, true
}

// Edit calls f with the entries awaiting their answer, oldest first, under
// the queue's lock; the first done of them are dropped. f may change the
// entries in place.
func (q *Pending[E]) Edit(f func(items []E) (done int)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	done := f(q.items[q.head:])
	clear(q.items[q.head : q.head+done])
	q.head += done
}

// Len is how many entries await their answer.
func (q *Pending[E]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}

// Full reports whether the queue holds as many entries as its limit.
func (q *Pending[E]) Full() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.Limit > 0 && len(q.items)-q.head >= q.Limit
}

// Answered records n answers delivered to the client.
func (q *Pending[E]) Answered(n uint64) {
	q.mu.Lock()
	q.answered += n
	q.wake()
	q.mu.Unlock()
}

// Busy reports whether an answer is still owed.
func (q *Pending[E]) Busy() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.answered < q.sent && !q.closed
}

// Idle reports whether every answer owed was delivered.
func (q *Pending[E]) Idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.answered >= q.sent
}

// WaitIdle blocks until every answer owed was delivered, or the server
// stream ended.
func (q *Pending[E]) WaitIdle() {
	q.mu.Lock()
	for q.answered < q.sent && !q.closed {
		q.wait()
	}
	q.mu.Unlock()
}

// WaitIdleCtx is WaitIdle until ctx ends; it reports whether every answer
// owed was delivered.
func (q *Pending[E]) WaitIdleCtx(ctx context.Context) bool {
	stop := context.AfterFunc(ctx, func() {
		q.mu.Lock()
		q.wake()
		q.mu.Unlock()
	})
	defer stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.answered < q.sent && !q.closed && ctx.Err() == nil {
		q.wait()
	}
	return q.answered >= q.sent
}

// Close ends every wait: the server stream stopped.
func (q *Pending[E]) Close() {
	q.mu.Lock()
	q.closed = true
	q.wake()
	q.mu.Unlock()
}
