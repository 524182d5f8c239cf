package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/events"
)

// proxy is one established session on the agent's relay: the client
// side decodes and gates client batches, the server side scans the
// database's answers.
type proxy struct {
	agent.Relay
	e          *Engine
	key        []byte // the secret key the client was given
	target     *cancelTarget
	backendPID uint32
	// refuseList are the parameters statements may not set.
	refuseList []string

	q        *stmtQueue
	dec      *clientDecoder
	sc       scanState
	answered uint64 // ReadyForQuery messages scanned, as told to the relay

	txStatus atomic.Uint32
	copyIn   atomic.Bool
}

// bind readies the relay once the database connection is up; before the
// lifecycle may call Terminate.
func (p *proxy) bind(server net.Conn) {
	if p.q == nil {
		p.q = newStmtQueue()
	}
	if p.txStatus.Load() == 0 {
		p.txStatus.Store('I')
	}
	p.Server, p.Codec, p.Queue = server, p, p.q
}

// Termination is 57P05 for idleness, as PostgreSQL's own
// idle_session_timeout, else 57P01 admin_shutdown; nothing while the
// client's stream stands inside a message.
func (p *proxy) Termination(reason, message string) []byte {
	if p.sc.inMsg || p.sc.hdrN != 0 {
		return nil
	}
	code := stateAdminShutdown
	if reason == events.EndIdleTimeout {
		code = stateIdleSessionTimeout
	}
	return errorResponse("FATAL", code, "tollgate: "+message)
}

// cancel is the engine's agent.CancelFunc: the client's next messages are
// held back, and a statement in progress gets a cancel request to its
// backend; it is confirmed once the server answered everything forwarded.
func (p *proxy) cancel(ctx context.Context) (agent.Cancel, error) {
	p.Stop()
	if p.target == nil || !p.q.Busy() {
		return agent.Cancel{}, nil
	}
	c := agent.Cancel{Method: fmt.Sprintf("cancel request to backend %d", p.target.pid)}
	if err := p.target.send(ctx, p.e.opt.DialTimeout); err != nil {
		return c, err
	}
	c.Confirmed = p.q.WaitIdleCtx(ctx)
	return c, nil
}

// clientBuffer is the relay's client read buffer, which a batch fills.
const clientBuffer = agent.ClientBuffer

// run proxies until either side ends, then closes the session.
func (p *proxy) run(ctx context.Context, up *upstream) error {
	if p.Server == nil {
		p.bind(up.conn)
	}
	o := p.e.opt
	p.dec = newClientDecoder(o.MaxMessage, o.MaxCopyData, o.MaxParam, p.q)
	p.dec.refuseList = p.refuseList
	return p.Run(ctx, nil, up.r)
}

// Decode decodes a client batch, gates its events, and only then
// forwards the original bytes.
func (p *proxy) Decode(ctx context.Context, b []byte) (consumed, need int, err error) {
	dec := p.dec
	dec.status = byte(p.txStatus.Load())
	consumed, need, mal := dec.decode(b, time.Now())
	if mal != nil {
		return consumed, 0, p.malformed(mal)
	}
	if err := p.forward(ctx, dec, b); err != nil {
		return consumed, 0, err
	}
	if dec.terminate {
		return consumed, 0, &agent.ClientEnded{Reason: "client terminated the session"}
	}
	return consumed, need, nil
}

// ClientClosed: a client that leaves inside a message sent a truncated
// one.
func (p *proxy) ClientClosed(err error, rest []byte) *agent.Malformed {
	if len(rest) == 0 || !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	typ := rest[0]
	return p.malformed(&malformed{reason: fmt.Sprintf("truncated: the client closed the connection %d bytes into a message", len(rest)), typ: typ, length: int64(len(rest)), prefix: secretless(typ, rest)})
}

// forward gates the batch's events and forwards its messages, or refuses
// the batch with the protocol's own errors when the store is unavailable.
func (p *proxy) forward(ctx context.Context, dec *clientDecoder, buf []byte) error {
	if p.Stopped() {
		// The session is being ended: this batch is neither recorded
		// nor sent, and the termination closes the connection.
		return nil
	}
	if len(dec.replies) > 0 {
		if err := p.WriteClient(dec.replies); err != nil {
			return err
		}
	}
	if !dec.gated() {
		// Only copy summaries (or nothing): no statement waits on them,
		// see flushCopy.
		if len(dec.evs) > 0 {
			if err := p.Sess.Emit(dec.evs...); err != nil {
				return err
			}
		}
		if len(dec.segs) == 0 {
			return nil
		}
	} else if len(dec.segs) == 0 {
		return nil
	} else if dec.refusal != "" {
		return p.refuseSetting(ctx, dec)
	} else if ae, err := p.Gate(ctx, dec.evs...); err != nil {
		return err
	} else if ae != nil {
		return p.refuse(dec, ae)
	}
	p.q.push(dec.entries)
	p.Statements.Add(dec.statements)
	p.Send(buf, dec.segs)
	return nil
}

// refuse answers a batch whose events could not be stored: nothing of it
// reaches the database; the client gets an ErrorResponse per statement (and
// the ReadyForQuery it waits for), and the refusal is recorded with the
// refused events, to be stored when the store is back.
func (p *proxy) refuse(dec *clientDecoder, ae *agent.AuditError) error {
	msg := "tollgate: " + ae.Error() + "; the statement was not sent to the database"
	p.Sess.Refused(&events.Result{
		Status:       events.Status{Success: false, Error: msg},
		ErrorCode:    stateAuditUnavailable,
		ErrorMessage: msg,
	})
	p.Errors.Add(1)
	return p.answerRefused(dec, stateAuditUnavailable, msg)
}

// refuseSetting answers a batch with a statement that sets a parameter the
// database's list refuses (see refusedSetting): the batch's events and the
// refusal are stored, nothing of it reaches the database, and the client
// gets an ErrorResponse per statement.
func (p *proxy) refuseSetting(ctx context.Context, dec *clientDecoder) error {
	msg := fmt.Sprintf("tollgate: parameter %q may not be set through the agent: it would change the database's own logging or auditing; the statement was not sent to the database", dec.refusal)
	res := &events.Result{
		Status:       events.Status{Success: false, Error: msg},
		ErrorCode:    stateInsufficientPrivilege,
		ErrorMessage: msg,
	}
	if ae, err := p.Gate(ctx, append(dec.evs, res)...); err != nil {
		return err
	} else if ae != nil {
		return p.refuse(dec, ae)
	}
	p.Errors.Add(1)
	return p.answerRefused(dec, stateInsufficientPrivilege, msg)
}

// answerRefused answers each message of a refused batch as the server
// would after an error: ErrorResponse and ReadyForQuery for a query,
// ErrorResponse then silence until Sync for the extended protocol, a
// CopyFail of its own for COPY data.
func (p *proxy) answerRefused(dec *clientDecoder, code, msg string) error {
	const (
		replyError = 'E'
		replyReady = 'Z'
	)
	var replies []byte
	abortCopy := false
	for _, t := range dec.types {
		switch t {
		case 'Q', 'F':
			if !dec.discardUntilSync {
				replies = append(replies, replyError, replyReady)
			}
		case 'S':
			if !dec.discardUntilSync {
				replies = append(replies, replyError)
			}
			dec.discardUntilSync = false
			replies = append(replies, replyReady)
		case 'P', 'B', 'D', 'E', 'C', 'H':
			if !dec.discardUntilSync {
				replies = append(replies, replyError)
				dec.discardUntilSync = true
			}
		case 'd', 'c', 'f':
			// The database waits for COPY data: end the COPY with the
			// agent's own CopyFail; its error reaches the client, whose
			// remaining COPY messages are dropped.
			if p.copyIn.Load() {
				abortCopy = true
			}
			dec.discardCopy = abortCopy && t == 'd'
			if t != 'd' {
				dec.copyTotal = 0
			}
		}
	}
	if abortCopy {
		fail := appendMessage(nil, 'f', append([]byte(msg), 0))
		if _, err := p.Server.Write(fail); err != nil {
			return err
		}
	}
	if len(replies) == 0 {
		return nil
	}
	// The agent's answers must not overtake the server's answers to what
	// was forwarded before.
	p.Refusal()
	status := byte(p.txStatus.Load())
	errMsg := errorResponse("ERROR", code, msg)
	var out []byte
	for _, r := range replies {
		if r == replyError {
			out = append(out, errMsg...)
		} else {
			out = append(out, readyForQuery(status)...)
		}
	}
	return p.WriteClient(out)
}

// malformed is bad client input: recorded, answered with a FATAL error,
// and nothing of the batch forwarded.
func (p *proxy) malformed(m *malformed) *agent.Malformed {
	return &agent.Malformed{Event: malformedEvent(m), Ending: "malformed client message: " + m.reason, Err: m,
		Reply: errorResponse("FATAL", stateProtocolViolation,
			"tollgate: malformed message from the client: "+m.reason+"; the connection is closed and nothing of it was forwarded")}
}

// Scan follows one read of the database's answers, forwarded as they
// arrive, for one result event per statement.
func (p *proxy) Scan(b []byte) ([]byte, uint64, error) {
	if err := p.scan(b); err != nil {
		return nil, 0, &agent.Malformed{
			Event:  &events.MalformedPacket{Direction: "server", Reason: err.Error(), Length: int64(len(b))},
			Ending: "malformed message from the database: " + err.Error(),
			Reply:  errorResponse("FATAL", stateProtocolViolation, "tollgate: malformed message from the database: "+err.Error()),
			Err:    err,
		}
	}
	answers := p.sc.ready - p.answered
	p.answered = p.sc.ready
	return b, answers, nil
}
