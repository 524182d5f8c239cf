package mysql

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/mysql/wire"
	"github.com/tollgate-db/tollgate/agent/redact"
	"github.com/tollgate-db/tollgate/events"
)

// malformed describes client input that closes the connection.
type malformed struct {
	reason string
	length int64
	prefix []byte // nil when the packet may hold a secret
	seq    uint8  // sequence id of the offending packet
	// code and message replace the generic ERR when set.
	code    uint16
	state   string
	message string
}

func (m *malformed) Error() string { return m.reason }

// errQuit ends the client loop after a forwarded COM_QUIT.
var errQuit = errors.New("client quit")

// nextPacket reads the logical packet at the start of b: one chunk, or
// chunks of MaxChunk bytes and a shorter last one, with sequence ids 0, 1,
// 2... as a command requires. With an incomplete packet it returns nil
// and how many bytes from b's start the packet needs at least. The
// payload aliases b unless it spans chunks.
func nextPacket(b []byte, limit int) (payload []byte, size int, lastSeq uint8, need int, bad *malformed) {
	off, total := 0, 0
	for chunk := 0; ; chunk++ {
		if len(b)-off < 4 {
			return nil, 0, 0, off + 4, nil
		}
		n := int(b[off]) | int(b[off+1])<<8 | int(b[off+2])<<16
		seq := b[off+3]
		if seq != uint8(chunk) {
			return nil, 0, 0, 0, &malformed{reason: fmt.Sprintf("packet sequence id %d, expected %d (a command starts at 0)", seq, uint8(chunk)),
				length: int64(n), prefix: b[off:min(len(b), off+16)], seq: seq, code: codeOutOfOrder,
				message: fmt.Sprintf("tollgate: packets out of order: sequence id %d where %d was expected; the connection is closed and nothing of it was forwarded", seq, uint8(chunk))}
		}
		total += n
		if total > limit {
			return nil, 0, 0, 0, &malformed{reason: fmt.Sprintf("packet of %d bytes or more is over the limit of %d bytes", total, limit),
				length: int64(total), prefix: b[off:min(len(b), off+16)], seq: seq, code: codeTooLarge,
				message: fmt.Sprintf("tollgate: packet of %d bytes or more is over the agent's limit of %d bytes (max_allowed_packet); the connection is closed and nothing of it was forwarded", total, limit)}
		}
		if len(b)-off-4 < n {
			need = off + 4 + n
			if n == wire.MaxChunk {
				need += 4
			}
			return nil, 0, 0, need, nil
		}
		off += 4 + n
		if n < wire.MaxChunk {
			lastSeq = seq
			break
		}
	}
	if off == total+4 {
		return b[4:off], off, lastSeq, 0, nil
	}
	payload = make([]byte, 0, total)
	for p := 0; p < off; {
		n := int(b[p]) | int(b[p+1])<<8 | int(b[p+2])<<16
		payload = append(payload, b[p+4:p+4+n]...)
		p += 4 + n
	}
	return payload, off, lastSeq, 0, nil
}

// clientDecoder turns the client's commands into events and groups them:
// a group's events are gated together and its packets forwarded together.
// A group ends after a command that changes the statement tracker, so a
// refused group leaves the tracker as the server's state is.
type clientDecoder struct {
	p         *proxy
	maxPacket int
	maxParam  int

	// The group being built.
	evs        []events.Event
	entries    []pending
	from, to   int
	replySeqs  []uint8 // for refusals: sequence ids of commands awaiting an answer
	apply      []wire.Command
	longData   bool
	statements uint64
	quit       bool
	// loose counts the events at the end of evs that belong to a command
	// not yet added (the database checks of a USE).
	loose int
}

func (d *clientDecoder) empty() bool { return d.to == d.from && len(d.evs) == 0 }

func (d *clientDecoder) reset(at int) {
	d.evs = nil // handed to the recorder, which may keep it
	d.entries = d.entries[:0]
	d.from, d.to = at, at
	d.replySeqs = d.replySeqs[:0]
	d.apply = d.apply[:0]
	d.longData = false
	d.statements = 0
	d.loose = 0
}

// process handles the complete packets at the start of b. It returns how
// many bytes it consumed and, when the next packet is incomplete, how many
// bytes that packet needs in all.
func (d *clientDecoder) process(ctx context.Context, b []byte) (consumed, need int, err error) {
	off := 0
	d.reset(0)
	for {
		if d.p.infileActive() {
			// A client sends the file only when asked, so no command
			// of this read is pending in the group.
			n, nd, done, err := d.infileData(b[off:])
			off += n
			if err != nil {
				return off, 0, err
			}
			if !done {
				need = nd
				break
			}
			d.reset(off)
			continue
		}
		payload, size, seq, nd, bad := nextPacket(b[off:], d.maxPacket)
		if bad != nil {
			return off, 0, bad
		}
		if payload == nil {
			need = nd
			break
		}
		if err := d.command(ctx, b, off, size, seq, payload); err != nil {
			return off, 0, err
		}
		off += size
		if d.quit {
			if err := d.flush(ctx, b); err != nil {
				return off, 0, err
			}
			return off, 0, errQuit
		}
	}
	if err := d.flush(ctx, b); err != nil {
		return off, 0, err
	}
	return off, need, nil
}

// lockedStmts reads the tracker under the proxy's lock.
type lockedStmts struct{ p *proxy }

func (l lockedStmts) LookupStmt(id uint32) (wire.StmtInfo, bool) {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	return l.p.stmts.LookupStmt(id)
}

// forward adds the packet at b[off:off+size] to the group.
func (d *clientDecoder) forward(off, size int, seq uint8, expects bool, evs ...events.Event) {
	if d.to == d.from {
		d.from = off
	}
	d.to = off + size
	d.evs = append(d.evs, evs...)
	d.loose = 0
	if expects {
		d.replySeqs = append(d.replySeqs, seq)
	}
}

func (d *clientDecoder) entry(cmd wire.CommandType) *pending {
	d.entries = append(d.entries, pending{cmd: cmd})
	return &d.entries[len(d.entries)-1]
}

// command decodes one command and adds it to the group, or answers it
// itself.
func (d *clientDecoder) command(ctx context.Context, b []byte, off, size int, seq uint8, payload []byte) error {
	p := d.p
	if len(payload) == 0 {
		return &malformed{reason: "empty command packet", seq: seq}
	}
	cmd, err := wire.DecodeCommand(payload, p.caps, lockedStmts{p})
	if errors.Is(err, wire.ErrUnknownStatement) && (!d.empty() || !p.q.Idle()) {
		// A client may send COM_STMT_EXECUTE right behind the
		// COM_STMT_PREPARE it runs (MariaDB's statement id -1): forward
		// what came before, let the server answer, then decode again.
		if err := d.flush(ctx, b); err != nil {
			return err
		}
		d.reset(off)
		p.q.WaitIdle()
		cmd, err = wire.DecodeCommand(payload, p.caps, lockedStmts{p})
	}
	unknownStmt := errors.Is(err, wire.ErrUnknownStatement)
	if err != nil && !unknownStmt {
		return &malformed{reason: fmt.Sprintf("%s does not decode: %v", wire.CommandType(payload[0]), err),
			length: int64(len(payload)), prefix: payload[:min(len(payload), 64)], seq: seq}
	}
	switch c := cmd.(type) {
	case *wire.Query:
		return d.query(ctx, b, off, size, seq, c)
	case *wire.InitDB:
		ok, err := d.changeDB(ctx, b, off, seq, c.Schema, "COM_INIT_DB", "")
		if err != nil || !ok {
			return err
		}
		d.forward(off, size, seq, true)
		e := d.entry(wire.ComInitDB)
		e.schema, e.hasSchema = c.Schema, true
	case *wire.StmtPrepare:
		// The statement is kept as recorded, secrets masked: executes
		// show it and mask the values bound to its secret placeholders.
		text, found := redact.MySQL(c.Query)
		d.forward(off, size, seq, true, &events.MySQLPrepare{Query: text, Redacted: found.Any()})
		e := d.entry(wire.ComStmtPrepare)
		e.query, e.secret = text, found
		d.statements++
	case *wire.StmtExecute:
		ev, secret := d.execute(c, unknownStmt)
		d.forward(off, size, seq, true, ev)
		d.entry(wire.ComStmtExecute).secret = secret
		d.statements++
		if !unknownStmt {
			d.apply = append(d.apply, c)
		}
		return d.endGroup(ctx, b)
	case *wire.StmtSendLongData:
		d.forward(off, size, seq, false, &events.MySQLSendLongData{StatementID: c.StatementID, ParamID: c.ParamID, Bytes: uint64(len(c.Data))})
		d.apply = append(d.apply, c)
		d.longData = true
		return d.endGroup(ctx, b)
	case *wire.StmtClose:
		d.forward(off, size, seq, false, d.statementEvent("COM_STMT_CLOSE", c.StatementID, 0))
		d.apply = append(d.apply, c)
		return d.endGroup(ctx, b)
	case *wire.StmtReset:
		d.forward(off, size, seq, true, d.statementEvent("COM_STMT_RESET", c.StatementID, 0))
		d.entry(wire.ComStmtReset)
		d.apply = append(d.apply, c)
		return d.endGroup(ctx, b)
	case *wire.StmtFetch:
		d.forward(off, size, seq, true, d.statementEvent("COM_STMT_FETCH", c.StatementID, c.NumRows))
		d.entry(wire.ComStmtFetch)
	case *wire.FieldList:
		d.forward(off, size, seq, true, &events.MySQLFieldList{Table: c.Table, Wildcard: c.Wildcard})
		d.entry(wire.ComFieldList)
	case *wire.ChangeUser:
		return &malformed{reason: "COM_CHANGE_USER refused: it would authenticate as a user other than the certificate's",
			length: int64(len(payload)), seq: seq, code: codeNotAllowed, state: stateNotAllowed,
			message: "tollgate: COM_CHANGE_USER is not allowed through the agent: the session's identity comes from the certificate; reconnect as the other db_user instead. The connection is closed and nothing of it was forwarded"}
	case *wire.Quit:
		d.forward(off, size, seq, false, command("COM_QUIT", ""))
		d.quit = true
	case *wire.Ping, *wire.Statistics, *wire.ProcessInfo:
		d.forward(off, size, seq, true, command(c.Type().String(), ""))
		d.entry(c.Type())
	case *wire.ProcessKill:
		d.forward(off, size, seq, true, command("COM_PROCESS_KILL", strconv.FormatUint(uint64(c.ConnectionID), 10)))
		d.entry(wire.ComProcessKill)
	case *wire.SetOption:
		arg := "MYSQL_OPTION_MULTI_STATEMENTS_ON"
		if c.Option != wire.OptionMultiStatementsOn {
			arg = "MYSQL_OPTION_MULTI_STATEMENTS_OFF"
			if c.Option != wire.OptionMultiStatementsOff {
				arg = strconv.Itoa(int(c.Option))
			}
		}
		d.forward(off, size, seq, true, command("COM_SET_OPTION", arg))
		d.entry(wire.ComSetOption)
	case *wire.ResetConnection:
		d.forward(off, size, seq, true, command("COM_RESET_CONNECTION", ""))
		d.entry(wire.ComResetConnection)
		d.apply = append(d.apply, c)
		return d.endGroup(ctx, b)
	case *wire.CreateDB:
		d.forward(off, size, seq, true, command("COM_CREATE_DB", c.Schema))
		d.entry(wire.ComCreateDB)
		d.statements++
	case *wire.DropDB:
		d.forward(off, size, seq, true, command("COM_DROP_DB", c.Schema))
		d.entry(wire.ComDropDB)
		d.statements++
	case *wire.RawCommand:
		if !knownCommand(c.Cmd) {
			return &malformed{reason: fmt.Sprintf("unknown command 0x%02x", uint8(c.Cmd)),
				length: int64(len(payload)), prefix: payload[:min(len(payload), 64)], seq: seq, code: codeUnknownCommand}
		}
		ev := command(c.Cmd.String(), "")
		ev.Success = false
		ev.Error = fmt.Sprintf("%s is not supported through the agent", c.Cmd)
		return d.answer(ctx, b, seq, ev, codeUnknownCommand, "08S01", "tollgate: "+ev.Error+"; it was not sent to the database")
	default:
		return &malformed{reason: fmt.Sprintf("unexpected command %T", cmd), length: int64(len(payload)), seq: seq}
	}
	return nil
}

// knownCommand reports whether t is a command byte of the protocol (one
// the agent refuses politely rather than as garbage).
func knownCommand(t wire.CommandType) bool {
	return t <= wire.ComResetConnection || t == wire.ComStmtBulkExecute || t == wire.ComMulti
}

func command(name, arg string) *events.MySQLCommand {
	return &events.MySQLCommand{Status: events.Status{Success: true}, Command: name, Argument: arg}
}

// endGroup closes the group after a command that changes the tracker.
func (d *clientDecoder) endGroup(ctx context.Context, b []byte) error {
	at := d.to
	if err := d.flush(ctx, b); err != nil {
		return err
	}
	d.reset(at)
	return nil
}

// statementEvent records a close, reset or fetch of a prepared statement.
func (d *clientDecoder) statementEvent(cmd string, id, rows uint32) *events.MySQLStatement {
	q := d.queryOf(id)
	_, secret := redact.MySQL(q)
	return &events.MySQLStatement{Command: cmd, StatementID: id, Query: q, FetchRows: rows, Redacted: secret.Any()}
}

// redactedParam stands for a parameter value bound to a password.
const redactedParam = "***"

func (d *clientDecoder) queryOf(id uint32) string {
	p := d.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if st, ok := p.stmts.LookupStmt(id); ok {
		id = st.ID
	}
	return p.queries[id]
}

// execute builds the event of a COM_STMT_EXECUTE, and returns the values
// it masked, for the result's error message.
func (d *clientDecoder) execute(c *wire.StmtExecute, unknown bool) (*events.MySQLExecute, redact.Found) {
	var masked redact.Found
	ev := &events.MySQLExecute{StatementID: c.StatementID, CursorType: c.Flags & 0x07, UnknownStatement: unknown}
	var secret redact.Found
	if !unknown {
		ev.Query = d.queryOf(c.StatementID)
		_, secret = redact.MySQL(ev.Query)
		ev.Redacted = secret.Any()
	}
	if len(c.Params) > 0 {
		ev.Parameters = make([]string, len(c.Params))
		ev.ParameterTypes = make([]string, len(c.Params))
		for i := range c.Params {
			prm := &c.Params[i]
			ev.ParameterTypes[i] = typeName(prm.ParamType)
			if secret.Param(i) {
				ev.Parameters[i] = redactedParam
				masked.Secrets = append(masked.Secrets, prm.AuditText())
				continue
			}
			text := prm.AuditText()
			if len(text) > d.maxParam {
				text = truncateUTF8(text, d.maxParam)
				ev.ParametersTruncated = true
			}
			ev.ParametersTruncated = ev.ParametersTruncated || prm.Truncated
			ev.Parameters[i] = text
		}
	}
	return ev, masked
}

var typeNames, unsignedNames = func() (n, u [256]string) {
	for i := range n {
		n[i] = wire.FieldType(i).String()
		u[i] = n[i] + " UNSIGNED"
	}
	return n, u
}()

func typeName(t wire.ParamType) string {
	if t.Unsigned {
		return unsignedNames[t.Type]
	}
	return typeNames[t.Type]
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// query handles COM_QUERY: a USE to a database the roles do not allow is
// refused before it reaches the server.
func (d *clientDecoder) query(ctx context.Context, b []byte, off, size int, seq uint8, c *wire.Query) error {
	text, found := redact.MySQL(c.Query)
	ev := &events.Query{Query: text, Redacted: found.Any()}
	for _, a := range c.Attributes {
		ev.Parameters = append(ev.Parameters, a.Name+"="+a.AuditText())
	}
	var schema string
	var hasSchema bool
	if isUse(c.Query) {
		targets, ok := useTargets(c.Query)
		if !ok {
			deny := &events.MySQLChangeDB{Command: "COM_QUERY", Query: c.Query,
				Status: events.Status{Error: "the database name of a USE statement could not be read"}}
			return d.answer(ctx, b, seq, deny, codeDBAccessDenied, stateDBAccessDenied,
				"tollgate: the database name of this USE statement could not be read, so access to it cannot be checked; it was not sent to the database")
		}
		for _, t := range targets {
			ok, err := d.changeDB(ctx, b, off, seq, t, "COM_QUERY", c.Query)
			if err != nil || !ok {
				return err
			}
		}
		if len(targets) > 0 {
			schema, hasSchema = targets[len(targets)-1], true
		}
	}
	d.forward(off, size, seq, true, ev)
	e := d.entry(wire.ComQuery)
	e.secret = found
	e.schema, e.hasSchema = schema, hasSchema
	d.statements++
	return nil
}

// changeDB checks a database change against the roles. Allowed, its event
// joins the group; refused, the client gets ERR 1044 and the refusal is
// recorded, and ok is false.
func (d *clientDecoder) changeDB(ctx context.Context, b []byte, off int, seq uint8, schema, via, query string) (ok bool, err error) {
	p := d.p
	c := p.client
	dec := c.Env.Authorize(c.Identity, c.Database.Info(), p.dbUser, schema)
	ev := &events.MySQLChangeDB{Schema: schema, Command: via, Query: query, Rule: dec.Rule, Status: events.Status{Success: dec.Allowed}}
	if dec.Allowed {
		d.evs = append(d.evs, ev)
		d.loose++
		if d.to == d.from {
			d.from, d.to = off, off
		}
		return true, nil
	}
	ev.Error = agent.Denial(c.Identity.User, c.Database.Config.Name, p.dbUser, schema, dec)
	msg := fmt.Sprintf("tollgate: access denied for user %q to database %s: %s; it was not sent to the database", c.Identity.User, quoteIdent(schema), ev.Error)
	return false, d.answer(ctx, b, seq, ev, codeDBAccessDenied, stateDBAccessDenied, msg)
}

// answer refuses one command itself: what was grouped before it is
// forwarded first, the refusal is recorded, and the client gets an ERR
// once the server has answered everything before.
func (d *clientDecoder) answer(ctx context.Context, b []byte, seq uint8, ev events.Event, code uint16, state, msg string) error {
	// Events of the refused command that were grouped (a USE allowed
	// before another denied) go with the refusal.
	pendingEvs := append([]events.Event(nil), d.evs[len(d.evs)-d.loose:]...)
	d.evs = d.evs[:len(d.evs)-d.loose]
	at := d.to
	if err := d.flush(ctx, b); err != nil {
		return err
	}
	d.reset(at)
	p := d.p
	if ae, err := p.Gate(ctx, append(pendingEvs, ev)...); err != nil {
		return err
	} else if ae != nil {
		code, state, msg = codeAuditUnavailable, stateAuditUnavailable, "tollgate: "+ae.Error()+"; the command was not sent to the database"
		p.Sess.Refused(&events.Result{Status: events.Status{Error: msg}, ErrorCode: strconv.Itoa(codeAuditUnavailable), ErrorMessage: msg})
	}
	p.Errors.Add(1)
	p.q.WaitIdle()
	return p.WriteClient(errPacket(seq+1, code, state, msg))
}

// flush gates the group's events and forwards its packets, or refuses
// them when the store is unavailable.
func (d *clientDecoder) flush(ctx context.Context, b []byte) error {
	if d.empty() {
		return nil
	}
	p := d.p
	if ae, err := p.Gate(ctx, d.evs...); err != nil {
		return err
	} else if ae != nil {
		return d.refuse(ae)
	}
	now := time.Now()
	for i := range d.entries {
		d.entries[i].at = now
	}
	p.q.push(d.entries)
	p.Statements.Add(d.statements)
	if d.to > d.from {
		if _, err := p.Server.Write(b[d.from:d.to]); err != nil {
			p.SetReason("database connection lost")
			return err
		}
	}
	if len(d.apply) > 0 {
		p.mu.Lock()
		for _, c := range d.apply {
			p.stmts.Apply(c)
			switch c := c.(type) {
			case *wire.StmtClose:
				delete(p.queries, c.StatementID)
			case *wire.ResetConnection:
				clear(p.queries)
			}
		}
		p.mu.Unlock()
	}
	d.reset(d.to)
	return nil
}

// refuse answers a group whose events could not be stored: nothing of it
// reaches the database, every command awaiting an answer gets an ERR, and
// the refusal is recorded with the refused events, to be stored when the
// store is back.
func (d *clientDecoder) refuse(ae *agent.AuditError) error {
	p := d.p
	msg := "tollgate: " + ae.Error() + "; the command was not sent to the database"
	p.Sess.Refused(&events.Result{
		Status:       events.Status{Success: false, Error: msg},
		ErrorCode:    strconv.Itoa(codeAuditUnavailable),
		ErrorMessage: msg,
	})
	p.Errors.Add(1)
	p.q.WaitIdle()
	var out []byte
	for _, seq := range d.replySeqs {
		out = append(out, errPacket(seq+1, codeAuditUnavailable, stateAuditUnavailable, msg)...)
	}
	longData := d.longData
	d.reset(d.to)
	if len(out) > 0 {
		if err := p.WriteClient(out); err != nil {
			return err
		}
	}
	if longData {
		// The server keeps what earlier pieces sent; a later execute would
		// run with part of the value. Ending the session is the safe
		// answer.
		p.SetReason("long data could not be audited")
		_ = p.WriteClient(errPacket(1, codeAuditUnavailable, stateAuditUnavailable, msg+"; the session is closed because a statement's long data is incomplete"))
		return errors.New("long data refused: " + ae.Error())
	}
	return nil
}
