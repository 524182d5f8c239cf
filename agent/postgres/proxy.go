package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/events"
)

// proxy is one established session: the client loop decodes and gates
// client batches, the server loop scans the database's answers.
type proxy struct {
	agent.Tally
	e          *Engine
	sess       *agent.Session
	client     net.Conn
	server     net.Conn
	key        []byte // the secret key the client was given
	target     *cancelTarget
	backendPID uint32
	// refuseList are the parameters statements may not set.
	refuseList []string

	// stopping is closed when the lifecycle cancels the session: from
	// then on nothing the client sends reaches the database.
	stopOnce sync.Once
	stopping chan struct{}

	clientMu sync.Mutex // serialises writes to the client
	q        *stmtQueue
	sc       scanState

	txStatus atomic.Uint32
	copyIn   atomic.Bool

	termMu sync.Mutex
	// termMsg is the ErrorResponse terminate wants the client to read
	// last; the server goroutine sends it once the server stream stopped.
	termMsg []byte
}

// terminate is the engine's agent.TerminateFunc: it ends the session with
// a FATAL ErrorResponse (57P05 for idleness, as PostgreSQL's own
// idle_session_timeout, else 57P01 admin_shutdown). Closing the database
// side stops the server stream first, so the error never lands inside a
// message the database was sending.
func (p *proxy) terminate(reason, message string) {
	code := stateAdminShutdown
	if reason == events.EndIdleTimeout {
		code = stateIdleSessionTimeout
	}
	p.SetReason(reason)
	p.termMu.Lock()
	p.termMsg = errorResponse("FATAL", code, "tollgate: "+message)
	p.termMu.Unlock()
	p.server.Close()
}

// cancel is the engine's agent.CancelFunc: the client's next messages are
// held back, and a statement in progress gets a cancel request to its
// backend; it is confirmed once the server answered everything forwarded.
func (p *proxy) cancel(ctx context.Context) (agent.Cancel, error) {
	p.stopOnce.Do(func() { close(p.stopping) })
	if p.target == nil || !p.q.busy() {
		return agent.Cancel{}, nil
	}
	c := agent.Cancel{Method: fmt.Sprintf("cancel request to backend %d", p.target.pid)}
	if err := p.target.send(ctx, p.e.opt.DialTimeout); err != nil {
		return c, err
	}
	c.Confirmed = p.q.waitIdleCtx(ctx)
	return c, nil
}

// sendTermination writes terminate's error, when there is one and the
// client's stream stands between two messages. Only after serverLoop
// returned.
func (p *proxy) sendTermination() {
	p.termMu.Lock()
	msg := p.termMsg
	p.termMu.Unlock()
	if msg != nil && !p.sc.inMsg && p.sc.hdrN == 0 {
		_ = p.writeClient(msg)
	}
}

func (p *proxy) writeClient(b []byte) error {
	p.clientMu.Lock()
	defer p.clientMu.Unlock()
	_, err := p.client.Write(b)
	return err
}

// run proxies until either side ends, then closes the session.
func (p *proxy) run(ctx context.Context, up *upstream) error {
	if p.server == nil {
		// session() sets it before handing terminate to the lifecycle,
		// which may read it from then on.
		p.server = up.conn
	}
	if p.q == nil {
		p.q = newStmtQueue()
	}
	if p.stopping == nil {
		p.stopping = make(chan struct{})
	}
	if p.txStatus.Load() == 0 {
		p.txStatus.Store('I')
	}
	return agent.RunLoops(ctx, &p.Tally, p.sess, p.client, p.server, p.clientLoop, func() error {
		err := p.serverLoop(up.r)
		p.q.close()
		p.sendTermination()
		return err
	})
}

const clientBuffer = 32 << 10

// clientLoop reads client batches: each read's complete messages are
// decoded, their events gated, and only then the original bytes forwarded.
func (p *proxy) clientLoop(ctx context.Context) error {
	o := p.e.opt
	dec := newClientDecoder(o.MaxMessage, o.MaxCopyData, o.MaxParam, p.q)
	dec.refuseList = p.refuseList
	buf := make([]byte, clientBuffer)
	w := 0
	for {
		n, rerr := p.client.Read(buf[w:])
		w += n
		p.BytesIn.Add(uint64(n))
		if n > 0 {
			dec.status = byte(p.txStatus.Load())
			consumed, need, mal := dec.decode(buf[:w], time.Now())
			if mal != nil {
				return p.malformed(ctx, mal)
			}
			if err := p.forward(ctx, dec, buf); err != nil {
				return err
			}
			if dec.terminate {
				p.SetReason("client terminated the session")
				return nil
			}
			w = copy(buf, buf[consumed:w])
			switch {
			case need > len(buf):
				nb := make([]byte, need)
				copy(nb, buf[:w])
				buf = nb
			case len(buf) > clientBuffer && w <= clientBuffer && need <= clientBuffer:
				nb := make([]byte, clientBuffer)
				copy(nb, buf[:w])
				buf = nb
			}
		}
		if rerr != nil {
			if w > 0 && (errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF)) {
				typ := buf[0]
				return p.malformed(ctx, &malformed{reason: fmt.Sprintf("truncated: the client closed the connection %d bytes into a message", w), typ: typ, length: int64(w), prefix: secretless(typ, buf[:w])})
			}
			p.SetReason("client closed the connection")
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, net.ErrClosed) {
				return nil
			}
			return rerr
		}
	}
}

// forward gates the batch's events and forwards its messages, or refuses
// the batch with the protocol's own errors when the store is unavailable.
func (p *proxy) forward(ctx context.Context, dec *clientDecoder, buf []byte) error {
	select {
	case <-p.stopping:
		// The session is being ended: this batch is neither recorded
		// nor sent, and the termination closes the connection.
		return nil
	default:
	}
	if len(dec.replies) > 0 {
		if err := p.writeClient(dec.replies); err != nil {
			return err
		}
	}
	if !dec.gated() {
		// Only copy summaries (or nothing): no statement waits on them,
		// see flushCopy.
		if len(dec.evs) > 0 {
			if err := p.sess.Emit(dec.evs...); err != nil {
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
	} else if err := p.sess.Gate(ctx, dec.evs...); err != nil {
		var ae *agent.AuditError
		if !errors.As(err, &ae) {
			return err
		}
		return p.refuse(dec, ae)
	}
	p.q.push(dec.entries)
	p.Statements.Add(dec.statements)
	for _, s := range dec.segs {
		if _, err := p.server.Write(buf[s.from:s.to]); err != nil {
			p.SetReason("database connection lost")
			return nil
		}
	}
	return nil
}

// refuse answers a batch whose events could not be stored: nothing of it
// reaches the database; the client gets an ErrorResponse per statement (and
// the ReadyForQuery it waits for), and the refusal is recorded with the
// refused events, to be stored when the store is back.
func (p *proxy) refuse(dec *clientDecoder, ae *agent.AuditError) error {
	msg := "tollgate: " + ae.Error() + "; the statement was not sent to the database"
	p.sess.Refused(&events.Result{
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
	if err := p.sess.Gate(ctx, append(dec.evs, res)...); err != nil {
		var ae *agent.AuditError
		if !errors.As(err, &ae) {
			return err
		}
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
		if _, err := p.server.Write(fail); err != nil {
			return err
		}
	}
	if len(replies) == 0 {
		return nil
	}
	// The agent's answers must not overtake the server's answers to what
	// was forwarded before.
	p.q.waitIdle()
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
	return p.writeClient(out)
}

// malformed records bad client input and closes: nothing of the batch is
// forwarded.
func (p *proxy) malformed(ctx context.Context, m *malformed) error {
	_ = p.sess.Gate(ctx, malformedEvent(m))
	p.SetReason("malformed client message: " + m.reason)
	_ = p.writeClient(errorResponse("FATAL", stateProtocolViolation,
		"tollgate: malformed message from the client: "+m.reason+"; the connection is closed and nothing of it was forwarded"))
	return m
}

// serverLoop forwards the database's bytes to the client in the chunks they
// arrive in, scanning message boundaries on the way to build one result
// event per statement.
func (p *proxy) serverLoop(r io.Reader) error {
	buf := make([]byte, 64<<10)
	var answered uint64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if serr := p.scan(buf[:n]); serr != nil {
				ev := &events.MalformedPacket{Direction: "server", Reason: serr.Error(), Length: int64(n)}
				_ = p.sess.Emit(ev)
				p.SetReason("malformed message from the database: " + serr.Error())
				_ = p.writeClient(errorResponse("FATAL", stateProtocolViolation, "tollgate: malformed message from the database: "+serr.Error()))
				return serr
			}
			if werr := p.writeClient(buf[:n]); werr != nil {
				p.SetReason("client connection lost")
				return nil
			}
			p.BytesOut.Add(uint64(n))
			if p.sc.ready != answered {
				answered = p.sc.ready
				p.q.setAnswered(answered)
			}
		}
		if err != nil {
			p.SetReason("database closed the connection")
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
	}
}
