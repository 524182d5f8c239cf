package tdsserver

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/agent/sqlserver/tds"
)

// curCmdSelect is the DONE token's current command for SELECT.
const curCmdSelect = 0xC1

// value is a SQL value: nil (NULL), int64 or string.
type value = any

// sqlError is an error SQL Server would report with an ERROR token.
type sqlError struct {
	number int32
	class  byte
	msg    string
}

func (e *sqlError) Error() string { return e.msg }

// out collects the tokens of one answer.
type out struct {
	b   []byte
	err bool
}

func (o *out) error(e *sqlError) {
	o.b = tds.AppendError(o.b, tds.TokenError, tds.ServerMessage{Number: e.number, State: 1, Class: e.class, Text: e.msg, Server: "tdsserver", Line: 1})
	o.err = true
}

// splitTop splits s on sep outside quotes.
func splitTop(s string, sep byte) []string {
	var parts []string
	quote := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\'':
			quote = !quote
		case s[i] == sep && !quote:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

func (c *conn) batch(text string) error {
	o := &out{}
	stmts := []string{}
	for _, st := range splitTop(text, ';') {
		if st = strings.TrimSpace(st); st != "" {
			stmts = append(stmts, st)
		}
	}
	for i, st := range stmts {
		more := i < len(stmts)-1
		cancelled, err := c.statement(o, st, nil, more, tds.TokenDone)
		if err != nil {
			return err
		}
		if cancelled {
			return c.writeTokens(tds.AppendDone(o.b, tds.TokenDone, tds.DoneAttn, 0, 0))
		}
		if o.err {
			break
		}
	}
	if len(stmts) == 0 {
		o.b = tds.AppendDone(o.b, tds.TokenDone, 0, 0, 0)
	} else if o.err {
		o.b = tds.AppendDone(o.b, tds.TokenDone, tds.DoneError, 0, 0)
	}
	return c.writeTokens(o.b)
}

// statement runs one statement, appending its tokens and a DONE (of kind
// done) to o. It reports whether an Attention cancelled it.
func (c *conn) statement(o *out, st string, params map[string]value, more bool, done byte) (bool, error) {
	status := uint16(0)
	if more || done == tds.TokenDoneInProc {
		status |= tds.DoneMore
	}
	lower := strings.ToLower(st)
	// The keyword ends at the first character that is not a letter
	// (raiserror('x', 16, 1) has no space).
	end := strings.IndexFunc(lower, func(r rune) bool { return r < 'a' || r > 'z' })
	if end < 0 {
		end = len(lower)
	}
	word, rest, restOrig := lower[:end], strings.TrimSpace(lower[end:]), st[end:]
	switch word {
	case "select":
		row, cols, err := c.selectList(strings.TrimSpace(restOrig), params)
		if err != nil {
			o.error(err)
			return false, nil
		}
		o.b = tds.AppendColMetadata(o.b, cols)
		o.b = append(o.b, tds.TokenRow)
		for i, v := range row {
			var err error
			if o.b, err = tds.AppendValue(o.b, &cols[i].Type, v); err != nil {
				return false, err
			}
		}
		o.b = tds.AppendDone(o.b, done, status|tds.DoneCount, curCmdSelect, 1)
	case "waitfor":
		d, err := parseDelay(rest)
		if err != nil {
			o.error(err)
			return false, nil
		}
		cancelled, werr := c.wait(context.Background(), d)
		if werr != nil || cancelled {
			return cancelled, werr
		}
		o.b = tds.AppendDone(o.b, done, status, 0, 0)
	case "use":
		db := strings.Trim(strings.TrimSpace(restOrig), "[]")
		if !c.s.hasDatabase(db) {
			o.error(&sqlError{911, 16, fmt.Sprintf("Database '%s' does not exist. Make sure that the name is entered correctly.", db)})
			return false, nil
		}
		old := c.database
		c.database = db
		o.b = tds.AppendEnvChange(o.b, tds.EnvDatabase, db, old)
		o.b = tds.AppendError(o.b, tds.TokenInfo, tds.ServerMessage{Number: 5701, State: 1, Text: fmt.Sprintf("Changed database context to '%s'.", db), Server: "tdsserver"})
		o.b = tds.AppendDone(o.b, done, status, 0, 0)
	case "set":
		o.b = tds.AppendDone(o.b, done, status, 0, 0)
	case "begin", "commit", "rollback":
		switch {
		case word == "begin" && strings.HasPrefix(rest, "tran"):
			o.b = c.beginTxn(o.b)
		case word == "commit":
			o.b = c.endTxn(o.b, tds.EnvCommitTran)
		case word == "rollback":
			o.b = c.endTxn(o.b, tds.EnvRollbackTran)
		default:
			o.error(&sqlError{102, 15, fmt.Sprintf("Incorrect syntax near '%s'.", word)})
			return false, nil
		}
		o.b = tds.AppendDone(o.b, done, status, 0, 0)
	case "raiserror":
		args := strings.Trim(strings.TrimSpace(restOrig), "()")
		parts := splitTop(args, ',')
		msg, _ := literal(strings.TrimSpace(parts[0]))
		class := int64(16)
		if len(parts) > 1 {
			class, _ = strconv.ParseInt(strings.TrimSpace(parts[1]), 10, 8)
		}
		s, _ := msg.(string)
		o.error(&sqlError{50000, byte(class), s})
	case "print":
		v, _ := literal(strings.TrimSpace(restOrig))
		o.b = tds.AppendError(o.b, tds.TokenInfo, tds.ServerMessage{Text: fmt.Sprint(v), Server: "tdsserver"})
		o.b = tds.AppendDone(o.b, done, status, 0, 0)
	default:
		o.error(&sqlError{102, 15, fmt.Sprintf("Incorrect syntax near '%s'.", word)})
	}
	return false, nil
}

func (c *conn) beginTxn(b []byte) []byte {
	c.txn++
	var d [8]byte
	binary.LittleEndian.PutUint64(d[:], c.txn)
	return tds.AppendEnvChangeBytes(b, tds.EnvBeginTran, d[:], nil)
}

func (c *conn) endTxn(b []byte, typ byte) []byte {
	var d [8]byte
	binary.LittleEndian.PutUint64(d[:], c.txn)
	return tds.AppendEnvChangeBytes(b, typ, nil, d[:])
}

func parseDelay(s string) (time.Duration, *sqlError) {
	rest, ok := strings.CutPrefix(s, "delay")
	if !ok {
		return 0, &sqlError{102, 15, "Incorrect syntax near 'waitfor'."}
	}
	v, err := literal(strings.TrimSpace(rest))
	str, isStr := v.(string)
	if err != nil || !isStr {
		return 0, &sqlError{102, 15, "Incorrect syntax near 'delay'."}
	}
	var h, m int
	var sec float64
	if _, err := fmt.Sscanf(str, "%d:%d:%f", &h, &m, &sec); err != nil {
		return 0, &sqlError{148, 15, fmt.Sprintf("Incorrect time syntax in time string '%s' used with WAITFOR.", str)}
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec*float64(time.Second)), nil
}

// literal reads a number, a string ('...' or N'...') or NULL.
func literal(s string) (value, *sqlError) {
	switch {
	case strings.EqualFold(s, "null"):
		return nil, nil
	case strings.HasPrefix(s, "'") || strings.HasPrefix(s, "N'") || strings.HasPrefix(s, "n'"):
		q := s[strings.IndexByte(s, '\''):]
		if len(q) < 2 || q[len(q)-1] != '\'' {
			return nil, &sqlError{105, 15, fmt.Sprintf("Unclosed quotation mark after the character string '%s'.", q)}
		}
		return strings.ReplaceAll(q[1:len(q)-1], "''", "'"), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	return nil, &sqlError{207, 16, fmt.Sprintf("Invalid column name '%s'.", s)}
}

// selectList evaluates "expr [as name], ...".
func (c *conn) selectList(list string, params map[string]value) ([]value, []tds.Column, *sqlError) {
	if i := strings.Index(strings.ToLower(list), " from "); i >= 0 {
		table := strings.Fields(list[i+6:])
		name := ""
		if len(table) > 0 {
			name = table[0]
		}
		return nil, nil, &sqlError{208, 16, fmt.Sprintf("Invalid object name '%s'.", name)}
	}
	var row []value
	var cols []tds.Column
	for _, e := range splitTop(list, ',') {
		e = strings.TrimSpace(e)
		name := ""
		if i := strings.LastIndex(strings.ToLower(e), " as "); i >= 0 {
			name = strings.Trim(strings.TrimSpace(e[i+4:]), "[]\"")
			e = strings.TrimSpace(e[:i])
		}
		v, err := c.expr(e, params)
		if err != nil {
			return nil, nil, err
		}
		col := tds.Column{Name: name, Flags: 0x01}
		switch v.(type) {
		case int64:
			col.Type = tds.IntN8
		case string:
			col.Type = tds.NVarChar
		default:
			col.Type = tds.IntN4
		}
		row = append(row, v)
		cols = append(cols, col)
	}
	return row, cols, nil
}

func (c *conn) expr(e string, params map[string]value) (value, *sqlError) {
	switch strings.ToLower(e) {
	case "@@spid":
		return int64(c.spid), nil
	case "@@version":
		return "Microsoft SQL Server 2022 (tdsserver)", nil
	case "@@servername":
		return "tdsserver", nil
	case "db_name()":
		return c.database, nil
	case "suser_sname()", "system_user", "suser_name()":
		if c.info.Principal != "" {
			return c.info.Principal, nil
		}
		return c.info.User, nil
	case "current_user", "user_name()":
		return "dbo", nil
	}
	if strings.HasPrefix(e, "@") {
		v, ok := params[strings.ToLower(e)]
		if !ok {
			return nil, &sqlError{137, 15, fmt.Sprintf("Must declare the scalar variable \"%s\".", e)}
		}
		return v, nil
	}
	return literal(e)
}

// rpc runs the calls of an RPC request.
func (c *conn) rpc(calls []tds.RPCCall) error {
	o := &out{}
	for i := range calls {
		call := &calls[i]
		more := i < len(calls)-1
		cancelled, err := c.call(o, call)
		if err != nil {
			return err
		}
		if cancelled {
			return c.writeTokens(tds.AppendDone(o.b, tds.TokenDone, tds.DoneAttn, 0, 0))
		}
		status := uint16(0)
		if more {
			status |= tds.DoneMore
		}
		if o.err {
			status |= tds.DoneError
		}
		o.b = tds.AppendReturnStatus(o.b, 0)
		o.b = c.outputs(o.b, call)
		o.b = tds.AppendDone(o.b, tds.TokenDoneProc, status, 0, 0)
		c.pendingOut = nil
	}
	return c.writeTokens(o.b)
}

func (c *conn) outputs(b []byte, call *tds.RPCCall) []byte {
	for _, ov := range c.pendingOut {
		var err error
		b, err = tds.AppendReturnValue(b, ov.ordinal, ov.name, &tds.IntN4, ov.v)
		if err != nil {
			panic(err)
		}
	}
	return b
}

type outValue struct {
	ordinal uint16
	name    string
	v       int64
}

// paramValue turns a decoded parameter into a SQL value.
func paramValue(p *tds.Param) value {
	if p.Value.Null {
		return nil
	}
	switch p.Type.Type {
	case tds.TypeIntN, tds.TypeInt1, tds.TypeInt2, tds.TypeInt4, tds.TypeInt8, tds.TypeBitN, tds.TypeBit:
		n, err := strconv.ParseInt(p.Value.Text, 10, 64)
		if err == nil {
			return n
		}
	}
	return p.Value.Text
}

// bind maps the values of params (after the fixed ones) to the names of
// the declaration: by name when the call names them, else by position.
func bind(decl string, params []tds.Param) (map[string]value, *sqlError) {
	var names []string
	for _, d := range splitTop(decl, ',') {
		if f := strings.Fields(d); len(f) > 0 {
			names = append(names, strings.ToLower(f[0]))
		}
	}
	m := map[string]value{}
	for i := range params {
		p := &params[i]
		name := strings.ToLower(p.Name)
		if name == "" {
			if i >= len(names) {
				return nil, &sqlError{8144, 16, "Procedure or function has too many arguments specified."}
			}
			name = names[i]
		}
		m[name] = paramValue(p)
	}
	for _, n := range names {
		if _, ok := m[n]; !ok {
			return nil, &sqlError{8178, 16, fmt.Sprintf("The parameterized query expects the parameter '%s', which was not supplied.", n)}
		}
	}
	return m, nil
}

func text(p *tds.Param) string { return p.Value.Text }

func (c *conn) call(o *out, call *tds.RPCCall) (bool, error) {
	ps := call.Params
	need := func(n int) bool {
		if len(ps) < n {
			o.error(&sqlError{201, 16, fmt.Sprintf("Procedure or function '%s' expects parameters which were not supplied.", call.Name())})
			return false
		}
		return true
	}
	run := func(stmt string, params map[string]value) (bool, error) {
		stmts := []string{}
		for _, st := range splitTop(stmt, ';') {
			if st = strings.TrimSpace(st); st != "" {
				stmts = append(stmts, st)
			}
		}
		for _, st := range stmts {
			cancelled, err := c.statement(o, st, params, true, tds.TokenDoneInProc)
			if err != nil || cancelled || o.err {
				return cancelled, err
			}
		}
		return false, nil
	}
	switch call.WellKnown() {
	case tds.ProcExecuteSQL:
		if !need(1) {
			return false, nil
		}
		decl := ""
		if len(ps) > 1 {
			decl = text(&ps[1])
		}
		params, err := bind(decl, ps[min(2, len(ps)):])
		if err != nil {
			o.error(err)
			return false, nil
		}
		return run(text(&ps[0]), params)
	case tds.ProcPrepare, tds.ProcPrepExec:
		if !need(3) {
			return false, nil
		}
		h := c.s.prepare(text(&ps[1]), text(&ps[2]))
		c.pendingOut = append(c.pendingOut, outValue{ordinal: 0, name: ps[0].Name, v: int64(h)})
		if call.WellKnown() == tds.ProcPrepare {
			return false, nil
		}
		params, err := bind(text(&ps[1]), ps[3:])
		if err != nil {
			o.error(err)
			return false, nil
		}
		return run(text(&ps[2]), params)
	case tds.ProcExecute:
		if !need(1) {
			return false, nil
		}
		h, _ := strconv.Atoi(text(&ps[0]))
		decl, stmt, ok := c.s.prepared(int32(h))
		if !ok {
			o.error(&sqlError{8179, 16, fmt.Sprintf("Could not find prepared statement with handle %d.", h)})
			return false, nil
		}
		params, err := bind(decl, ps[1:])
		if err != nil {
			o.error(err)
			return false, nil
		}
		return run(stmt, params)
	case tds.ProcUnprepare:
		return false, nil
	}
	o.error(&sqlError{2812, 16, fmt.Sprintf("Could not find stored procedure '%s'.", call.Name())})
	return false, nil
}

func (s *Server) prepare(decl, stmt string) int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.nextHandle
	s.nextHandle++
	if s.stmts == nil {
		s.stmts = map[int32][2]string{}
	}
	s.stmts[h] = [2]string{decl, stmt}
	return h
}

func (s *Server) prepared(h int32) (decl, stmt string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.stmts[h]
	return p[0], p[1], ok
}

func (c *conn) transaction(tm tds.TMRequest) error {
	var b []byte
	switch tm.Type {
	case tds.TMBeginXact:
		b = c.beginTxn(b)
	case tds.TMCommitXact:
		b = c.endTxn(b, tds.EnvCommitTran)
		if tm.BeginNew {
			b = c.beginTxn(b)
		}
	case tds.TMRollbackXact:
		b = c.endTxn(b, tds.EnvRollbackTran)
		if tm.BeginNew {
			b = c.beginTxn(b)
		}
	case tds.TMSaveXact:
	default:
		b = tds.AppendError(b, tds.TokenError, tds.ServerMessage{Number: 8509, Class: 16, State: 1, Text: "Distributed transactions are not supported by this server.", Server: "tdsserver"})
		return c.writeTokens(tds.AppendDone(b, tds.TokenDone, tds.DoneError, 0, 0))
	}
	return c.writeTokens(tds.AppendDone(b, tds.TokenDone, 0, 0, 0))
}
