package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/tollgate-db/tollgate/agent/redact"
)

// entryKind is what a client message awaiting its answer is.
type entryKind uint8

const (
	kQuery    entryKind = iota + 1 // simple Query: one or more statements, ends at ReadyForQuery
	kFunc                          // FunctionCall: ends at ReadyForQuery
	kExec                          // Execute: ends at its completion message
	kSync                          // Sync: ends at ReadyForQuery
	kDescribe                      // Describe of a statement: ends at ParameterDescription
)

// entry is a client message whose answer the server stream has yet to
// deliver, with when it was forwarded.
type entry struct {
	kind entryKind
	at   time.Time
	stmt *prepared
	// secrets the statement's events masked, to mask again in an error
	// message that quotes them.
	secrets []string
}

// prepared is a prepared statement as the client defined it; oids may be
// completed by the server's ParameterDescription, under stmtQueue.mu.
type prepared struct {
	name  string
	query string // as recorded: secrets masked
	oids  []uint32
	// secret: a literal was masked or a $n binds a secret, whose bound
	// values are masked too.
	secret redact.Found
}

// stmtQueue pairs client messages with the server's answers, which come
// in the same order. The client loop pushes; the server loop pops.
type stmtQueue struct {
	mu       sync.Mutex
	cond     *sync.Cond
	items    []entry
	sent     uint64 // entries that end at ReadyForQuery, pushed
	answered uint64 // ReadyForQuery messages delivered to the client
	closed   bool
}

func newStmtQueue() *stmtQueue {
	q := &stmtQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *stmtQueue) push(es []entry) {
	q.mu.Lock()
	for _, e := range es {
		if e.kind == kQuery || e.kind == kFunc || e.kind == kSync {
			q.sent++
		}
	}
	q.items = append(q.items, es...)
	q.mu.Unlock()
}

// attribute finds when the statement that just completed began, and the
// secrets it held. An Execute is done at its completion; a simple Query
// may hold several statements, the next of which begins now.
func (q *stmtQueue) attribute(now time.Time) (time.Time, []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return now, nil
	}
	e := &q.items[0]
	start, secrets := e.at, e.secrets
	switch e.kind {
	case kExec:
		q.popFront()
	case kQuery, kFunc:
		e.at = now
	}
	return start, secrets
}

// ready handles ReadyForQuery: everything up to the Sync, Query or
// FunctionCall it answers is finished (Executes skipped after an error
// included).
func (q *stmtQueue) ready() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, e := range q.items {
		if e.kind == kQuery || e.kind == kFunc || e.kind == kSync {
			clear(q.items[:i+1])
			q.items = q.items[i+1:]
			return
		}
	}
}

// paramDesc applies a ParameterDescription to the statement whose Describe
// it answers.
func (q *stmtQueue) paramDesc(oids []uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 && q.items[0].kind == kDescribe {
		if st := q.items[0].stmt; st != nil {
			st.oids = oids
		}
		q.popFront()
	}
}

func (q *stmtQueue) popFront() {
	q.items[0] = entry{}
	q.items = q.items[1:]
}

// setAnswered records ReadyForQuery messages delivered to the client.
func (q *stmtQueue) setAnswered(n uint64) {
	q.mu.Lock()
	q.answered = n
	q.cond.Broadcast()
	q.mu.Unlock()
}

// waitIdle blocks until every Query, FunctionCall and Sync forwarded has
// been answered, so the agent's own answers never overtake the server's.
func (q *stmtQueue) waitIdle() {
	q.mu.Lock()
	for q.answered < q.sent && !q.closed {
		q.cond.Wait()
	}
	q.mu.Unlock()
}

// busy reports whether something forwarded still awaits its answer.
func (q *stmtQueue) busy() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.answered < q.sent && !q.closed
}

// waitIdleCtx is waitIdle until ctx ends; it reports whether everything
// forwarded was answered.
func (q *stmtQueue) waitIdleCtx(ctx context.Context) bool {
	stop := context.AfterFunc(ctx, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.answered < q.sent && !q.closed && ctx.Err() == nil {
		q.cond.Wait()
	}
	return q.answered >= q.sent
}

func (q *stmtQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// oidsOf reads a statement's parameter types.
func (q *stmtQueue) oidsOf(st *prepared) []uint32 {
	if st == nil {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return st.oids
}
