package sqlserver

import (
	"fmt"
	"strings"

	"github.com/tollgate-db/tollgate/agent/redact"
	"github.com/tollgate-db/tollgate/agent/sqlserver/tds"
	"github.com/tollgate-db/tollgate/events"
)

// decoder turns client messages into events. statements is how many
// statements the last message sent (RPC calls count one each).
type decoder struct {
	p          *proxy
	statements int
	evs        []events.Event
	bulk       tds.Scanner
}

// decode returns the events of m and the request the server will answer
// (nil for an Attention, which is answered within the request it
// cancels). An error means m does not decode and must not be forwarded.
func (d *decoder) decode(m *tds.Message) ([]events.Event, *request, error) {
	p := d.p
	// The recorder may keep the slice it is given, so none is reused.
	d.evs = nil
	d.statements = 0
	switch m.Type {
	case tds.PacketSQLBatch:
		_, text, err := tds.ParseSQLBatch(m.Payload, p.version)
		if err != nil {
			return nil, nil, err
		}
		d.statements = 1
		text, found := redact.SQLServer(text)
		return append(d.evs, &events.Query{Query: text, Redacted: found.Any()}), &request{kind: "SQLBatch", secret: found}, nil
	case tds.PacketRPC:
		_, calls, err := tds.ParseRPC(m.Payload, p.version, p.e.opt.MaxParam)
		if err != nil {
			return nil, nil, err
		}
		req := &request{kind: "RPC"}
		for i := range calls {
			ev, masked := p.rpcEvent(&calls[i], i, len(calls))
			req.secret.Secrets = append(req.secret.Secrets, masked...)
			if wk := calls[i].WellKnown(); (wk == tds.ProcPrepare || wk == tds.ProcPrepExec) && req.prepare == "" {
				req.prepare = ev.Query
			}
			d.evs = append(d.evs, ev)
		}
		d.statements = len(calls)
		return d.evs, req, nil
	case tds.PacketTransMgr:
		_, tm, err := tds.ParseTMRequest(m.Payload, p.version)
		if err != nil {
			return nil, nil, err
		}
		ev := &events.SQLServerTransaction{Request: tds.TMRequestName(tm.Type), Name: tm.Name, Isolation: tds.IsolationName(tm.Isolation), BeginNew: tm.BeginNew}
		if tm.BeginNew {
			ev.Name = tm.NewName
		}
		d.statements = 1
		return append(d.evs, ev), &request{kind: "transaction manager request"}, nil
	case tds.PacketAttention:
		if len(m.Payload) != 0 {
			return nil, nil, fmt.Errorf("an Attention message with a %d-byte payload", len(m.Payload))
		}
		n, kind := p.pendingKind()
		return append(d.evs, &events.SQLServerAttention{Pending: n, Request: kind}), nil, nil
	case tds.PacketBulkLoad:
		ev := &events.SQLServerBulkLoad{Bytes: uint64(len(m.Payload))}
		d.bulk.Version = p.version
		err := d.bulk.ScanAll(m.Payload, func(t *tds.Token) error {
			ev.Rows += t.Rows
			switch t.Kind {
			case tds.TokenColMetadata:
				ev.Columns = t.Columns
			case tds.TokenDone:
			default:
				return fmt.Errorf("bulk load data holds a %s token", tds.TokenName(t.Kind))
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("bulk load: %w", err)
		}
		return append(d.evs, ev), &request{kind: "bulk load"}, nil
	}
	return nil, nil, fmt.Errorf("%s message after login", tds.PacketTypeName(m.Type))
}

// Positions of the statement, declaration, handle and first value
// parameter of the system procedures that run statements (-1: none).
type procLayout struct{ stmt, decl, handle, values int }

var layouts = map[uint16]procLayout{
	tds.ProcExecuteSQL:      {0, 1, -1, 2},
	tds.ProcPrepare:         {2, 1, 0, -1},
	tds.ProcPrepExec:        {2, 1, 0, 3},
	tds.ProcExecute:         {-1, -1, 0, 1},
	tds.ProcUnprepare:       {-1, -1, 0, -1},
	tds.ProcCursorOpen:      {1, 5, 0, 6},
	tds.ProcCursorPrepare:   {2, 1, 0, -1},
	tds.ProcCursorPrepExec:  {3, 2, 0, 7},
	tds.ProcCursorExecute:   {-1, -1, 0, 5},
	tds.ProcCursorUnprepare: {-1, -1, 0, -1},
	tds.ProcCursorFetch:     {-1, -1, 0, 1},
	tds.ProcCursorOption:    {-1, -1, 0, 1},
	tds.ProcCursorClose:     {-1, -1, 0, -1},
	tds.ProcCursor:          {-1, -1, 0, 1},
	tds.ProcPrepExecRPC:     {-1, -1, 0, 2},
}

// rpcEvent describes one procedure call: for the system procedures that
// run statements, the statement (for sp_execute, the one its handle was
// prepared with), the declarations and the values; for any other
// procedure, every parameter.
//
// It also returns what it masked, for the answer's error message.
func (p *proxy) rpcEvent(c *tds.RPCCall, i, n int) (*events.SQLServerRPC, []string) {
	ev := &events.SQLServerRPC{Procedure: c.Name(), ProcedureID: c.ProcID, CallIndex: i, Calls: n, NoExec: c.NoExec}
	ps := c.Params
	lay, ok := layouts[c.WellKnown()]
	if !ok {
		lay = procLayout{-1, -1, -1, 0}
	}
	text := func(i int) string {
		if i < 0 || i >= len(ps) || ps[i].Value.Null {
			return ""
		}
		if ps[i].Value.Truncated {
			ev.ParametersTruncated = true
		}
		return ps[i].Value.Text
	}
	ev.Query = text(lay.stmt)
	ev.ParameterDefinitions = text(lay.decl)
	if lay.handle >= 0 && !(lay.handle < len(ps) && ps[lay.handle].Output()) {
		ev.Handle = text(lay.handle)
	}
	if ev.Query == "" && ev.Handle != "" {
		ev.Query = p.preparedQuery(ev.Handle) // stored as recorded, masked
	}
	var secret redact.Found
	ev.Query, secret = redact.SQLServer(ev.Query)
	proc := strings.ToLower(ev.Procedure)
	passwordProc := passwordProcs[proc[strings.LastIndexByte(proc, '.')+1:]]
	ev.Redacted = secret.Any()
	for j := range ps {
		if ps[j].Output() {
			ev.OutputParameters = append(ev.OutputParameters, ps[j].Name)
		}
	}
	if lay.values >= 0 && lay.values < len(ps) {
		for _, v := range ps[lay.values:] {
			ev.ParameterNames = append(ev.ParameterNames, v.Name)
			if secretParam(secret, passwordProc, v.Name) {
				secret.Secrets = append(secret.Secrets, v.Value.Text)
				ev.Parameters = append(ev.Parameters, redactedParam)
				ev.Redacted = true
				continue
			}
			ev.Parameters = append(ev.Parameters, v.Value.Text)
			ev.ParameterTypes = append(ev.ParameterTypes, v.Type.String())
			if v.Value.Truncated {
				ev.ParametersTruncated = true
			}
		}
	}
	return ev, secret.Secrets
}

// redactedParam stands for a parameter value bound to a password.
const redactedParam = "***"

// passwordProcs are the system procedures whose parameters are passwords
// but for the names in keepParams.
var passwordProcs = map[string]bool{
	"sp_addlogin": true, "sp_password": true, "sp_addapprole": true,
	"sp_approlepassword": true, "sp_setapprole": true, "sp_control_dbmasterkey_password": true,
}

var keepParams = map[string]bool{"@loginame": true, "@rolename": true, "@defdb": true, "@deflanguage": true, "@sid": true, "@encrypt": true}

// secretParam reports whether the value of parameter name is masked: it
// binds a password of the statement, or is a password procedure's
// argument. A positional (unnamed) value is masked whenever the statement
// binds any secret, as its name cannot be matched.
func secretParam(f redact.Found, passwordProc bool, name string) bool {
	if passwordProc {
		return !keepParams[strings.ToLower(name)]
	}
	if len(f.Names) == 0 {
		return false
	}
	return name == "" || f.Name(name)
}
