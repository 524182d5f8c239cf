package mysql

import (
	"time"

	"github.com/tollgate-db/tollgate/agent"
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
// come in the same order, one response each. The client loop pushes; the
// server loop pops.
type cmdQueue struct{ *agent.Pending[pending] }

func newCmdQueue() *cmdQueue { return &cmdQueue{&agent.Pending[pending]{}} }

func (q *cmdQueue) push(ps []pending) { q.Push(ps, uint64(len(ps))) }
