package mysql

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/mysql/wire"
	"github.com/tollgate-db/tollgate/agent/redact"
	"github.com/tollgate-db/tollgate/events"
)

// proxy is one established session on the agent's relay: the client side
// decodes and gates commands, the server side follows the responses.
type proxy struct {
	agent.Relay
	e *Engine
	// client is who the session is for.
	client *agent.ClientConn
	caps   wire.Capabilities
	dbUser string

	// mu guards what both loops touch: the prepared statements (the client
	// loop decodes executes with them, the server loop adds what prepares
	// return), their texts and the current database.
	mu      sync.Mutex
	stmts   *wire.Statements
	queries map[uint32]string
	schema  string

	q   *cmdQueue
	dec *clientDecoder

	// infile is the LOCAL INFILE transfer the server asked for, nil when
	// the client's packets are commands.
	infileMu sync.Mutex
	infile   *infile

	sc *serverScanner // the server loop's; read by Termination after it

	// kill, once the session is connected, opens a second connection as
	// the same db user and runs KILL QUERY for this one.
	kill   func(ctx context.Context) (string, error)
	connID uint32
}

func newProxy(e *Engine, sess *agent.Session, c *agent.ClientConn, caps wire.Capabilities, dbUser, dbName string) *proxy {
	p := &proxy{Relay: agent.Relay{Tally: agent.Tally{Started: time.Now()}, Sess: sess, Client: c}, e: e, client: c, caps: caps, dbUser: dbUser, schema: dbName,
		stmts: wire.NewStatements(), queries: map[uint32]string{}, q: newCmdQueue()}
	p.sc = &serverScanner{p: p, dec: wire.NewResponseDecoder(caps)}
	p.dec = &clientDecoder{p: p, maxPacket: e.opt.MaxPacket, maxParam: e.opt.MaxParam}
	p.Codec, p.Queue = p, p.q
	// MariaDB resets a connection it drops (wait_timeout): the client's
	// connection is reset too, so that its next write fails as it would
	// directly.
	p.ResetWithServer = true
	return p
}

// bind sets the database connection once it is up; before the lifecycle
// may call Terminate.
func (p *proxy) bind(server net.Conn) { p.Server = server }

// cancel is the engine's agent.CancelFunc: the client's next commands are
// held back, and a command in progress is stopped with KILL QUERY; it is
// confirmed once the server answered every command forwarded.
func (p *proxy) cancel(ctx context.Context) (agent.Cancel, error) {
	p.Stop()
	if p.kill == nil || p.q.Idle() {
		return agent.Cancel{}, nil
	}
	c := agent.Cancel{Method: fmt.Sprintf("KILL QUERY %d on a second connection as %s", p.connID, p.dbUser)}
	if _, err := p.kill(ctx); err != nil {
		return c, err
	}
	c.Confirmed = p.q.WaitIdleCtx(ctx)
	return c, nil
}

// Termination is the ERR a session ended by the agent ends with: the next
// packet of a response in progress, or the answer to the client's next
// command (sequence id 1) when none is; nothing inside a packet.
func (p *proxy) Termination(_, message string) []byte {
	sc := p.sc
	if sc == nil || sc.inBody || sc.hdrN != 0 {
		return nil
	}
	seq := uint8(1)
	if sc.active {
		seq = sc.lastSeq + 1
	}
	return errPacket(seq, codeConnectionKilled, stateConnectionKilled, "tollgate: "+message)
}

// errPacket frames an ERR packet with sequence id seq.
func errPacket(seq uint8, code uint16, state, msg string) []byte {
	payload := (&wire.ErrPacket{Code: code, SQLState: state, Message: msg}).Encode(nil, wire.ClientProtocol41)
	out, _ := wire.AppendPacket(nil, seq, payload)
	return out
}

// run proxies until either side ends, then closes the session.
func (p *proxy) run(ctx context.Context, server net.Conn) error {
	p.bind(server)
	return p.Run(ctx, nil, server)
}

// Decode decodes and gates the complete commands of a client read, and
// only then forwards them.
func (p *proxy) Decode(ctx context.Context, b []byte) (consumed, need int, err error) {
	if p.Stopped() {
		// The session is being ended: nothing more is recorded or
		// sent, and the termination closes the connection.
		return len(b), 0, nil
	}
	consumed, need, err = p.dec.process(ctx, b)
	var m *malformed
	switch {
	case err == nil:
	case errors.As(err, &m):
		return consumed, 0, p.malformed(m)
	case errors.Is(err, errQuit):
		return consumed, 0, &agent.ClientEnded{Reason: "client quit (COM_QUIT)"}
	}
	return consumed, need, err
}

// ClientClosed: a bad compressed packet, or a client that leaves inside a
// packet, is malformed input.
func (p *proxy) ClientClosed(err error, rest []byte) *agent.Malformed {
	prefix := rest[:min(len(rest), 64)]
	switch {
	case errors.Is(err, errCompressed):
		return p.malformed(&malformed{reason: err.Error(), length: int64(len(rest)), prefix: prefix})
	case len(rest) > 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
		return p.malformed(&malformed{reason: fmt.Sprintf("truncated: the client closed the connection %d bytes into a packet", len(rest)),
			length: int64(len(rest)), prefix: prefix, seq: 0})
	}
	return nil
}

// malformed is bad client input: recorded, answered with an ERR once the
// server answered what was forwarded before, and not forwarded.
func (p *proxy) malformed(m *malformed) *agent.Malformed {
	ev := &events.MalformedPacket{Direction: "client", Reason: m.reason, Length: m.length}
	if len(m.prefix) > 0 {
		if _, found := redact.MySQL(string(m.prefix)); !found.Any() {
			ev.Prefix = fmt.Sprintf("%x", m.prefix)
		}
	}
	code := m.code
	if code == 0 {
		code = codeMalformed
	}
	msg := m.message
	if msg == "" {
		msg = "tollgate: malformed packet from the client: " + m.reason + "; the connection is closed and nothing of it was forwarded"
	}
	state := m.state
	if state == "" {
		state = stateMalformed
	}
	return &agent.Malformed{Event: ev, Ending: "malformed client packet: " + m.reason, Err: m,
		Wait: true, Reply: errPacket(m.seq+1, code, state, msg)}
}

// Scan follows packet boundaries in a read of the database's stream, for
// one result event per command.
func (p *proxy) Scan(b []byte) ([]byte, uint64, error) {
	sc := p.sc
	if serr := sc.scan(b); serr != nil {
		m := &agent.Malformed{
			Event:  &events.MalformedPacket{Direction: "server", Reason: serr.Error(), Length: int64(len(b))},
			Ending: "malformed packet from the database: " + serr.Error(),
			Err:    serr,
		}
		// The packets before the bad one were followed and go out; the
		// ERR then takes the bad packet's place and sequence id. A bad
		// packet the client already has the start of cannot be
		// replaced: the connection just ends.
		if sc.start >= 0 {
			m.Reply = append(b[:sc.start:sc.start], errPacket(sc.startSeq, codeMalformed, stateMalformed, "tollgate: malformed packet from the database: "+serr.Error())...)
		}
		return nil, 0, m
	}
	answers := sc.completed
	sc.completed = 0
	return sc.output(b), answers, nil
}

// maxHead is how much of one server packet the scanner keeps to decode;
// the rest of a larger row is only counted.
const maxHead = 1 << 20

// serverScanner follows packet boundaries in the server's stream across
// reads, copying only packets that straddle reads.
type serverScanner struct {
	p   *proxy
	dec *wire.ResponseDecoder

	hdr  [4]byte
	hdrN int
	// remain is what is left of the current chunk's body; more says a
	// chunk of MaxChunk bytes continues the payload.
	remain  int
	more    bool
	inBody  bool
	total   int
	head    []byte
	lastSeq uint8
	// start is where in the current read the payload being followed
	// began, -1 when it began in an earlier read; startSeq is its first
	// sequence id.
	start    int
	startSeq uint8

	cur       pending
	active    bool
	completed uint64

	// end is where in the current read the packet being handled ended.
	end int
	// A refused LOCAL INFILE request and the rest of its response are
	// kept from the client, which gets the agent's ERR in their place:
	// swallow is set from the request to the response's end, refusal is
	// that ERR, out is the read as the client gets it (with cut set) and
	// keep where the next forwarded part of the read starts.
	swallow bool
	refusal []byte
	out     []byte
	cut     bool
	keep    int
}

// output is the read b as the client is to get it.
func (s *serverScanner) output(b []byte) []byte {
	if !s.cut {
		return b
	}
	if !s.swallow {
		s.out = append(s.out, b[s.keep:]...)
	}
	return s.out
}

func (s *serverScanner) scan(b []byte) error {
	size, b0 := len(b), b
	s.out, s.keep, s.cut = s.out[:0], 0, s.swallow
	s.start = -1
	if !s.inBody && s.hdrN == 0 && s.total == 0 {
		s.start = 0
	}
	for len(b) > 0 {
		if !s.inBody {
			if s.hdrN == 0 && s.total == 0 {
				s.start = size - len(b)
			}
			k := copy(s.hdr[s.hdrN:], b)
			s.hdrN += k
			b = b[k:]
			if s.hdrN < 4 {
				return nil
			}
			s.hdrN = 0
			n := int(s.hdr[0]) | int(s.hdr[1])<<8 | int(s.hdr[2])<<16
			s.lastSeq = s.hdr[3]
			if s.total == 0 {
				s.startSeq = s.lastSeq
			}
			s.remain, s.more, s.inBody = n, n == wire.MaxChunk, true
			s.total += n
			if n == 0 {
				s.end = size - len(b)
				if err := s.chunkDone(b0); err != nil {
					return err
				}
			}
			continue
		}
		k := min(s.remain, len(b))
		body := b[:k]
		b = b[k:]
		s.remain -= k
		if s.remain == 0 && !s.more && len(s.head) == 0 && k == s.total {
			// The whole payload is in this read: decode it in place.
			s.inBody = false
			s.total = 0
			s.end = size - len(b)
			if err := s.packet(body, k, b0); err != nil {
				return err
			}
			continue
		}
		if room := maxHead - len(s.head); room > 0 {
			s.head = append(s.head, body[:min(room, len(body))]...)
		}
		if s.remain == 0 {
			s.end = size - len(b)
			if err := s.chunkDone(b0); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *serverScanner) chunkDone(read []byte) error {
	s.inBody = false
	if s.more {
		return nil
	}
	total := s.total
	s.total = 0
	err := s.packet(s.head, total, read)
	if cap(s.head) > 64<<10 {
		s.head = nil
	} else {
		s.head = s.head[:0]
	}
	return err
}

// packet follows one complete server payload (head holds up to maxHead
// bytes of it); read is the current read, which it ends in.
func (s *serverScanner) packet(head []byte, total int, read []byte) error {
	if !s.active {
		next, ok := s.p.q.Pop()
		if !ok {
			// MariaDB tells a client it is being disconnected (shutdown,
			// KILL) with an ERR it did not ask for.
			if len(head) > 0 && head[0] == wire.ErrHeader {
				return nil
			}
			return fmt.Errorf("%d-byte packet from the database with no command awaiting a response", total)
		}
		s.cur, s.active = next, true
		s.dec.Begin(next.cmd)
	}
	done, err := s.dec.FeedHead(head, total)
	if err != nil {
		return err
	}
	if !done && wire.IsLocalInfileRequest(head) {
		if name, ok := s.dec.LocalInfile(); ok {
			if err := s.localInfile(name, read); err != nil {
				return err
			}
		}
	}
	if done {
		s.active = false
		s.completed++
		r := s.dec.Response()
		if r.LocalInfileRequested {
			s.p.endInfile()
		}
		if s.swallow {
			s.swallow = false
			s.out = append(s.out, s.refusal...)
			s.keep = s.end
		}
		s.p.finish(&s.cur, r)
	}
	return nil
}

// localInfile follows the server's request for a file: the client is told
// to send it, or, when a role refuses it, the server gets an empty file
// and the client, in place of the whole response, an ERR.
func (s *serverScanner) localInfile(name string, read []byte) error {
	p := s.p
	if !p.Sess.Options.NoMySQLLocalInfile {
		p.startInfile(name, s.lastSeq)
		return nil
	}
	if s.start < 0 {
		return fmt.Errorf("LOCAL INFILE request (refused by a role) split across reads, so part of it already reached the client")
	}
	msg := p.refuseInfile(name)
	if _, err := p.Server.Write([]byte{0, 0, 0, s.lastSeq + 1}); err != nil {
		return fmt.Errorf("sending the database an empty file: %w", err)
	}
	if !s.cut {
		s.cut, s.out = true, s.out[:0]
	}
	s.out = append(s.out, read[s.keep:s.start]...)
	s.swallow = true
	s.refusal = errPacket(s.startSeq, codeLocalInfileRefused, stateLocalInfileRefused, msg)
	return nil
}

// finish handles a complete response: the statement tracker learns
// prepared statements, the current database follows successful changes,
// and the result event is queued.
func (p *proxy) finish(c *pending, r wire.Response) {
	now := time.Now()
	var schemaChanged bool
	var schema string
	if !r.Failed {
		switch {
		case r.SchemaChanged:
			schema, schemaChanged = r.Schema, true
		case c.hasSchema:
			schema, schemaChanged = c.schema, true
		}
	}
	if c.cmd == wire.ComStmtPrepare && !r.Failed || schemaChanged {
		p.mu.Lock()
		if c.cmd == wire.ComStmtPrepare && !r.Failed {
			p.stmts.Prepared(&r.Prepare)
			p.queries[r.Prepare.StatementID] = c.query
		}
		if schemaChanged {
			p.schema = schema
		}
		p.mu.Unlock()
		if schemaChanged {
			p.Sess.SetDB(p.dbUser, schema)
		}
	}
	ev := &events.Result{
		Status:     events.Status{Success: !r.Failed},
		CommandTag: commandTag(c.cmd, &r),
		Rows:       r.Rows + r.AffectedRows,
		Bytes:      r.Bytes,
		Warnings:   uint64(r.Warnings),
		DurationNs: now.Sub(c.at).Nanoseconds(),
	}
	if r.Failed {
		p.Errors.Add(1)
		ev.ErrorCode = strconv.Itoa(int(r.ErrorCode))
		ev.ErrorMessage = c.secret.Mask((&wire.ErrPacket{Code: r.ErrorCode, SQLState: r.SQLState, Message: r.ErrorMessage}).Error())
		ev.Error = ev.ErrorMessage
	}
	p.Rows.Add(r.Rows + r.AffectedRows)
	_ = p.Sess.Emit(ev)
}

// commandTag summarises a response: the command, then rows returned and
// affected, e.g. "COM_QUERY rows=3 affected=0".
func commandTag(cmd wire.CommandType, r *wire.Response) string {
	b := make([]byte, 0, 48)
	b = append(b, cmd.String()...)
	if r.Failed {
		return string(b)
	}
	if cmd == wire.ComStmtPrepare {
		b = append(b, " statement_id="...)
		b = strconv.AppendUint(b, uint64(r.Prepare.StatementID), 10)
		return string(b)
	}
	b = append(b, " rows="...)
	b = strconv.AppendUint(b, r.Rows, 10)
	b = append(b, " affected="...)
	b = strconv.AppendUint(b, r.AffectedRows, 10)
	if r.LastInsertID != 0 {
		b = append(b, " insert_id="...)
		b = strconv.AppendUint(b, r.LastInsertID, 10)
	}
	return string(b)
}
