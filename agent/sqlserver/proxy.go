package sqlserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/redact"
	"github.com/tollgate-db/tollgate/agent/sqlserver/tds"
	"github.com/tollgate-db/tollgate/events"
)

// request is a client request the server has yet to answer.
type request struct {
	kind string
	at   time.Time
	// prepare is the statement of an sp_prepare or sp_prepexec, whose
	// handle comes back in the first RETURNVALUE.
	prepare string
	// secret: what the request's events masked, to mask again in the
	// server's error message, which may quote the statement.
	secret redact.Found
}

// response accumulates the server's answer to the oldest request.
type response struct {
	rows, rowTokens uint64
	counted         bool
	bytes           uint64
	warnings        uint64
	errNumber       int32
	errMsg          string
	errors          int
	attn            bool
	cmd             uint16
	handle          string
}

// proxy is one established session on the agent's relay, which it feeds
// with whole TDS messages.
type proxy struct {
	agent.Relay
	e       *Engine
	version uint32
	dbUser  string
	dbName  string

	packetSize atomic.Int32

	// q holds the request being answered: TDS allows one at a time.
	q        agent.Pending[*request]
	pmu      sync.Mutex
	prepared map[string]string // handle → statement

	resp     response
	midReply atomic.Bool

	// serverMu keeps the agent's own Attention from landing inside a
	// message the client loop is forwarding.
	serverMu sync.Mutex
	// agentAttn is set while the agent's Attention awaits its
	// acknowledgement, which attnAck then receives.
	agentAttn atomic.Bool
	attnAck   chan struct{}
}

// bind readies the relay once the database connection is up; before the
// lifecycle may call Terminate.
func (p *proxy) bind(server net.Conn) {
	p.q.Limit = 1
	p.Server, p.Queue = server, &p.q
}

// cancel is the engine's agent.CancelFunc: the client's next messages are
// held back, and a request in progress gets an Attention on the session's
// own connection; it is confirmed by the DONE that acknowledges it.
func (p *proxy) cancel(ctx context.Context) (agent.Cancel, error) {
	p.Stop()
	if p.q.Len() == 0 {
		return agent.Cancel{}, nil
	}
	c := agent.Cancel{Method: "attention"}
	p.agentAttn.Store(true)
	p.serverMu.Lock()
	_, err := p.Server.Write(tds.AppendPackets(nil, tds.PacketAttention, nil, int(p.packetSize.Load()), 0))
	p.serverMu.Unlock()
	if err != nil {
		return c, fmt.Errorf("sending attention: %w", err)
	}
	select {
	case <-p.attnAck:
		c.Confirmed = true
	case <-ctx.Done():
	}
	return c, nil
}

// Termination is a fatal error, unless the server's answer stopped in the
// middle.
func (p *proxy) Termination(_, message string) []byte {
	if p.midReply.Load() {
		return nil
	}
	return p.tokens(errorTokens(errTollgate, classFatal, "tollgate: "+message))
}

// tokens frames tokens as a reply message for the client.
func (p *proxy) tokens(b []byte) []byte {
	return tds.AppendPackets(nil, tds.PacketReply, b, int(p.packetSize.Load()), 0)
}

// tokensToClient frames tokens as a reply message for the client.
func (p *proxy) tokensToClient(b []byte) error { return p.WriteClient(p.tokens(b)) }

// run proxies until either side ends, then closes the session.
func (p *proxy) run(ctx context.Context) error {
	return p.RunWith(ctx, p, p.clientLoop, p.serverLoop)
}

// clientLoop reads client messages: each is reassembled from its packets,
// decoded, its events gated, and only then its packets forwarded as they
// came.
func (p *proxy) clientLoop(ctx context.Context) error {
	r := tds.NewReader(p.Client)
	r.MaxMessage = p.e.opt.MaxMessage
	dec := &decoder{p: p}
	for {
		r.MaxPacket = int(p.packetSize.Load())
		m, err := r.ReadMessage()
		if err != nil {
			var pe *tds.ProtocolError
			if errors.As(err, &pe) {
				return p.Fail(ctx, p.malformed(pe.Reason, pe.Prefix, pe.Length))
			}
			p.SetReason("client closed the connection")
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		p.BytesIn.Add(uint64(len(m.Raw)))
		if p.Stopped() {
			// The session is being ended: nothing more is recorded or
			// sent, and the termination closes the connection.
			continue
		}
		if m.Ignored() {
			// The client withdrew the message (IGNORE): SQL Server
			// discards it, and so nothing of it goes anywhere.
			continue
		}
		evs, req, err := dec.decode(&m)
		if err != nil {
			return p.Fail(ctx, p.malformed(err.Error(), m.Raw, len(m.Raw)))
		}
		if req != nil && p.q.Full() {
			return p.Fail(ctx, p.malformed(fmt.Sprintf("%s sent while the previous request is still being answered (TDS allows one request at a time)", tds.PacketTypeName(m.Type)), m.Raw, len(m.Raw)))
		}
		if ae, err := p.Gate(ctx, evs...); err != nil {
			return err
		} else if ae != nil {
			if req == nil {
				// A cancel that cannot be recorded is not forwarded;
				// the client waits for its acknowledgement, so the
				// session ends.
				p.SetReason("audit store unavailable for a cancel")
				_ = p.tokensToClient(errorTokens(errTollgate, classFatal, "tollgate: "+ae.Error()+"; the cancel was not sent and the session is closed"))
				return ae
			}
			p.refuse(ae)
			continue
		}
		if req != nil {
			req.at = time.Now()
			p.q.Push([]*request{req}, 1)
			p.Statements.Add(uint64(dec.statements))
		}
		p.serverMu.Lock()
		_, err = p.Server.Write(m.Raw)
		p.serverMu.Unlock()
		if err != nil {
			p.SetReason("database connection lost")
			return nil
		}
	}
}

// refuse answers a request whose events could not be stored: nothing of
// it reaches the database, the client gets an error in place of the
// answer, and the refusal is recorded when the store is back.
func (p *proxy) refuse(ae *agent.AuditError) {
	msg := "tollgate: " + ae.Error() + "; the request was not sent to the database"
	p.Sess.Refused(&events.Result{
		Status:       events.Status{Success: false, Error: msg},
		ErrorCode:    strconv.Itoa(int(errTollgate)),
		ErrorMessage: msg,
	})
	p.Errors.Add(1)
	_ = p.tokensToClient(errorTokens(errTollgate, classRefused, msg))
}

// malformed is bad client input: recorded, answered with a fatal error
// unless the server's answer stopped in the middle, and not forwarded.
func (p *proxy) malformed(reason string, prefix []byte, length int) *agent.Malformed {
	ev := malformedEvent("client", reason, prefix)
	ev.Length = int64(length)
	m := &agent.Malformed{Event: ev, Ending: "malformed client message: " + reason, Err: errors.New("malformed client message: " + reason)}
	if !p.midReply.Load() {
		m.Reply = p.tokens(errorTokens(errProtocol, classFatal, "tollgate: malformed TDS from the client: "+reason+"; the connection is closed and nothing of it was forwarded"))
	}
	return m
}

// serverLoop forwards the database's packets as they arrive, scanning the
// token stream on the way for one result event per answered request.
func (p *proxy) serverLoop() error {
	sc := &tds.Scanner{Version: p.version}
	var hdr [tds.HeaderLen]byte
	buf := make([]byte, tds.MaxPacketSize)
	for {
		if _, err := io.ReadFull(p.Server, hdr[:]); err != nil {
			p.SetReason("database closed the connection")
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		h, err := tds.ParseHeader(hdr[:], tds.MaxPacketSize)
		if err == nil && h.Type != tds.PacketReply {
			err = fmt.Errorf("%s packet from the database", tds.PacketTypeName(h.Type))
		}
		if err != nil {
			return p.serverMalformed(err.Error(), hdr[:])
		}
		pkt := buf[:h.Length]
		copy(pkt, hdr[:])
		if _, err := io.ReadFull(p.Server, pkt[tds.HeaderLen:]); err != nil {
			p.SetReason("database closed the connection")
			return nil
		}
		payload := pkt[tds.HeaderLen:]
		p.resp.bytes += uint64(len(payload))
		if err := sc.Feed(payload, p.onToken); err != nil {
			return p.serverMalformed(err.Error(), pkt)
		}
		eom := h.Status&tds.StatusEOM != 0
		if eom {
			if sc.Pending() {
				return p.serverMalformed("the answer ended inside a token", pkt)
			}
			p.answered(time.Now())
		}
		p.midReply.Store(!eom)
		if err := p.WriteClient(pkt); err != nil {
			p.SetReason("client connection lost")
			return nil
		}
		p.BytesOut.Add(uint64(len(pkt)))
	}
}

func (p *proxy) serverMalformed(reason string, prefix []byte) error {
	m := &agent.Malformed{Event: malformedEvent("server", reason, prefix), Ending: "malformed message from the database: " + reason,
		Err: errors.New("malformed server message: " + reason)}
	if !p.midReply.Load() {
		m.Reply = p.tokens(errorTokens(errProtocol, classFatal, "tollgate: malformed TDS from the database: "+reason))
	}
	return p.Fail(context.Background(), m)
}

// onToken accumulates the answer of the oldest request.
func (p *proxy) onToken(t *tds.Token) error {
	r := &p.resp
	r.rowTokens += t.Rows
	switch t.Kind {
	case tds.TokenDone, tds.TokenDoneInProc, tds.TokenDoneProc:
		if t.Status&tds.DoneAttn != 0 {
			r.attn = true
		}
		if t.Status&tds.DoneCount != 0 && t.Kind != tds.TokenDoneProc {
			r.rows += t.RowCount
			r.counted = true
			r.cmd = t.CurCmd
		}
	case tds.TokenError:
		if r.errors == 0 {
			r.errNumber, r.errMsg = t.Number, t.Message
		}
		r.errors++
	case tds.TokenInfo:
		if t.Class > 0 {
			r.warnings++
		}
	case tds.TokenEnvChange:
		switch t.EnvType {
		case tds.EnvDatabase:
			from := p.dbName
			p.dbName = t.EnvNew
			p.Sess.SetDB(p.dbUser, t.EnvNew)
			_ = p.Sess.Emit(&events.SQLServerDatabaseChange{From: from, To: t.EnvNew})
		case tds.EnvPacketSize:
			if n, err := strconv.Atoi(t.EnvNew); err == nil && n >= tds.MinPacketSize && n <= tds.MaxPacketSize {
				p.packetSize.Store(int32(n))
			}
		}
	case tds.TokenReturnValue:
		if r.handle == "" && !t.Value.Null {
			r.handle = t.Value.Text
		}
	}
	return nil
}

// curCmds names the DONE token's current command for the command tag.
var curCmds = map[uint16]string{0xC1: "SELECT", 0xC3: "INSERT", 0xC4: "DELETE", 0xC5: "UPDATE", 0xE0: "EXECUTE"}

// answered ends the server's answer message: the oldest request gets its
// result event. An answer that only acknowledges an Attention after its
// request was already answered has no request of its own.
func (p *proxy) answered(now time.Time) {
	r := p.resp
	p.resp = response{}
	var req *request
	p.q.Edit(func(items []*request) int {
		if len(items) == 0 {
			return 0
		}
		// The handle is known before the next request may use it.
		if req = items[0]; req.prepare != "" && r.handle != "" {
			p.pmu.Lock()
			p.prepared[r.handle] = req.prepare
			p.pmu.Unlock()
		}
		return 1
	})
	if req != nil {
		p.q.Answered(1)
	}
	agentAttn := r.attn && p.agentAttn.Swap(false)
	if agentAttn {
		select {
		case p.attnAck <- struct{}{}:
		default:
		}
	}
	if req == nil {
		if !r.attn {
			p.e.log.Info("sqlserver: the database answered no request", "sid", p.Sess.ID)
		}
		return
	}
	ev := &events.Result{Bytes: r.bytes, Warnings: r.warnings, DurationNs: now.Sub(req.at).Nanoseconds()}
	ev.Rows = r.rowTokens
	if r.counted {
		ev.Rows = r.rows
	}
	p.Rows.Add(ev.Rows)
	if name, ok := curCmds[r.cmd]; ok {
		ev.CommandTag = name + " " + strconv.FormatUint(ev.Rows, 10)
	} else {
		ev.CommandTag = req.kind
	}
	ev.Success = true
	switch {
	case r.errors > 0:
		ev.Success = false
		ev.ErrorCode = strconv.Itoa(int(r.errNumber))
		ev.ErrorMessage = req.secret.Mask(r.errMsg)
		ev.Error = fmt.Sprintf("error %d: %s", r.errNumber, ev.ErrorMessage)
		p.Errors.Add(1)
	case agentAttn:
		ev.Success = false
		ev.Error = "cancelled by the agent (Attention) before it ended the session"
	case r.attn:
		ev.Success = false
		ev.Error = "cancelled by the client (Attention)"
	}
	_ = p.Sess.Emit(ev)
}

// preparedQuery is the statement a handle was prepared with.
func (p *proxy) preparedQuery(handle string) string {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	return p.prepared[handle]
}

// pendingKind is what the oldest unanswered request is.
func (p *proxy) pendingKind() (n int, kind string) {
	p.q.Edit(func(items []*request) int {
		if n = len(items); n > 0 {
			kind = items[0].kind
		}
		return 0
	})
	return n, kind
}
