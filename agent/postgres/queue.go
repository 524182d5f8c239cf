package postgres

import (
	"time"

	"github.com/tollgate-db/tollgate/agent"
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
// completed by the server's ParameterDescription, under the queue's lock
// (stmtQueue.Edit).
type prepared struct {
	name  string
	query string // as recorded: secrets masked
	oids  []uint32
	// secret: a literal was masked or a $n binds a secret, whose bound
	// values are masked too.
	secret redact.Found
}

// stmtQueue pairs client messages with the server's answers, which come
// in the same order: the client loop pushes, the server loop pops. It
// counts the entries that end at ReadyForQuery, the answers the relay
// waits for before the agent answers on its own.
type stmtQueue struct{ *agent.Pending[entry] }

func newStmtQueue() *stmtQueue { return &stmtQueue{&agent.Pending[entry]{}} }

func (q *stmtQueue) push(es []entry) {
	var answers uint64
	for _, e := range es {
		if e.kind == kQuery || e.kind == kFunc || e.kind == kSync {
			answers++
		}
	}
	q.Push(es, answers)
}

// attribute finds when the statement that just completed began, and the
// secrets it held. An Execute is done at its completion; a simple Query
// may hold several statements, the next of which begins now.
func (q *stmtQueue) attribute(now time.Time) (start time.Time, secrets []string) {
	start = now
	q.Edit(func(items []entry) int {
		if len(items) == 0 {
			return 0
		}
		e := &items[0]
		start, secrets = e.at, e.secrets
		switch e.kind {
		case kExec:
			return 1
		case kQuery, kFunc:
			e.at = now
		}
		return 0
	})
	return start, secrets
}

// ready handles ReadyForQuery: everything up to the Sync, Query or
// FunctionCall it answers is finished (Executes skipped after an error
// included).
func (q *stmtQueue) ready() {
	q.Edit(func(items []entry) int {
		for i, e := range items {
			if e.kind == kQuery || e.kind == kFunc || e.kind == kSync {
				return i + 1
			}
		}
		return 0
	})
}

// paramDesc applies a ParameterDescription to the statement whose Describe
// it answers.
func (q *stmtQueue) paramDesc(oids []uint32) {
	q.Edit(func(items []entry) int {
		if len(items) > 0 && items[0].kind == kDescribe {
			if st := items[0].stmt; st != nil {
				st.oids = oids
			}
			return 1
		}
		return 0
	})
}

// oidsOf reads a statement's parameter types, which paramDesc completes
// under the queue's lock.
func (q *stmtQueue) oidsOf(st *prepared) (oids []uint32) {
	if st == nil {
		return nil
	}
	q.Edit(func([]entry) int {
		oids = st.oids
		return 0
	})
	return oids
}
