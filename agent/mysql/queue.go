package mysql

import (
	"context"
	"sync"
	"time"

	"github.com/tollgate-db/tollgate/agent/mysql/wire"
	"github.com/tollgate-db/tollgate/agent/redact"
)

// pending is a forwarded command whose response the server has yet to
// send.
type pending struct {
	cmd wire.CommandType
	at  time.Time
	// query is the statement text of a COM_STMT_PREPARE.
	query string
	// schema is the database a COM_INIT_DB or USE switches to on success.
	schema    string
	hasSchema bool
	// secret: what the command's events masked, to mask again in the
	// server's error message, which may quote the statement.
	secret redact.Found
}

// cmdQueue pairs forwarded commands with the server's responses, which
// come in the same order. The client loop pushes; the server loop pops.
type cmdQueue struct {
	mu       sync.Mutex
	cond     *sync.Cond
	items    []pending
	head     int
	sent     uint64 // commands pushed
	answered uint64 // responses delivered to the client
	closed   bool
}

func newCmdQueue() *cmdQueue {
	q := &cmdQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *cmdQueue) push(ps []pending) {
	q.mu.Lock()
	if q.head > 0 && q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	q.items = append(q.items, ps...)
	q.sent += uint64(len(ps))
	q.mu.Unlock()
}

// pop takes the oldest command awaiting its response.
func (q *cmdQueue) pop() (pending, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		return pending{}, false
	}
	p := q.items[q.head]
	q.items[q.head] = pending{}
	q.head++
	return p, true
}

// addAnswered records responses delivered to the client.
func (q *cmdQueue) addAnswered(n uint64) {
	q.mu.Lock()
	q.answered += n
	q.cond.Broadcast()
	q.mu.Unlock()
}

// waitIdle blocks until every forwarded command has been answered, so the
// agent's own answers never overtake the server's.
func (q *cmdQueue) waitIdle() {
	q.mu.Lock()
	for q.answered < q.sent && !q.closed {
		q.cond.Wait()
	}
	q.mu.Unlock()
}

// waitIdleCtx is waitIdle until ctx ends; it reports whether every
// forwarded command was answered.
func (q *cmdQueue) waitIdleCtx(ctx context.Context) bool {
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

func (q *cmdQueue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.answered >= q.sent
}

func (q *cmdQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}
