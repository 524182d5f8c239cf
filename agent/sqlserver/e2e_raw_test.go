package sqlserver_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	mssql "github.com/microsoft/go-mssqldb"

	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/sqlserver/tds"
	"github.com/tollgate-db/tollgate/config"
)

// rawClient speaks TDS to the agent with the codec, to send what real
// clients never would.
type rawClient struct {
	t    *testing.T
	c    *tls.Conn
	r    *tds.Reader
	size int
}

func (s *stack) raw(t *testing.T) *rawClient {
	t.Helper()
	c, err := tls.Dial("tcp", s.Addr, s.roots)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	return &rawClient{t: t, c: c, r: tds.NewReader(c), size: tds.DefaultPacketSize}
}

func (rc *rawClient) send(typ byte, payload []byte) {
	rc.t.Helper()
	if _, err := rc.c.Write(tds.AppendPackets(nil, typ, payload, rc.size, 0)); err != nil {
		rc.t.Fatal(err)
	}
}

func (rc *rawClient) prelogin() {
	rc.t.Helper()
	p := &tds.Prelogin{}
	p.Set(tds.PreloginVersion, tds.VersionBytes(1, 0, 0, 0))
	p.Set(tds.PreloginEncryption, []byte{tds.EncryptNotSup})
	rc.send(tds.PacketPrelogin, p.Append(nil))
	m, err := rc.r.ReadMessage()
	if err != nil {
		rc.t.Fatalf("PRELOGIN answer: %v", err)
	}
	ans, err := tds.ParsePrelogin(m.Payload)
	if err != nil || ans.Encryption != tds.EncryptNotSup {
		rc.t.Fatalf("PRELOGIN answer %+v: %v", ans, err)
	}
}

func login7(user, db string) []byte {
	l := &tds.Login7{TDSVersion: tds.Version74, PacketSize: tds.DefaultPacketSize, UserName: user, Password: "not-used",
		Database: db, AppName: "raw", HostName: "test", CltIntName: "tds-codec"}
	b, _ := l.Append(nil)
	return b
}

// answer is what a reply message held.
type answer struct {
	kinds  []byte
	errors []tds.ServerMessage
	done   []uint16
	values []string
	rows   uint64
}

func (a *answer) errText() string {
	var s []string
	for _, e := range a.errors {
		s = append(s, fmt.Sprintf("%d: %s", e.Number, e.Text))
	}
	return strings.Join(s, "; ")
}

// read reads one reply message and scans its tokens.
func (rc *rawClient) read() (*answer, error) {
	m, err := rc.r.ReadMessage()
	if err != nil {
		return nil, err
	}
	a := &answer{}
	sc := &tds.Scanner{}
	err = sc.ScanAll(m.Payload, func(t *tds.Token) error {
		a.kinds = append(a.kinds, t.Kind)
		a.rows += t.Rows
		switch t.Kind {
		case tds.TokenError:
			a.errors = append(a.errors, tds.ServerMessage{Number: t.Number, Class: t.Class, Text: t.Message})
		case tds.TokenDone, tds.TokenDoneProc, tds.TokenDoneInProc:
			a.done = append(a.done, t.Status)
		case tds.TokenReturnValue:
			a.values = append(a.values, t.Value.Text)
		}
		return nil
	})
	return a, err
}

func (rc *rawClient) login(user, db string) {
	rc.t.Helper()
	rc.prelogin()
	rc.send(tds.PacketLogin7, login7(user, db))
	a, err := rc.read()
	if err != nil || len(a.errors) > 0 {
		rc.t.Fatalf("login: %v %s", err, a.errText())
	}
}

// expectMalformed reads the agent's answer to bad input: a fatal 4002
// naming the cause, then the end of the connection.
func (rc *rawClient) expectMalformed(want string) {
	rc.t.Helper()
	a, err := rc.read()
	if err != nil {
		rc.t.Fatalf("no error answer (want %q): %v", want, err)
	}
	if len(a.errors) != 1 || a.errors[0].Number != 4002 || a.errors[0].Class != 20 || !strings.Contains(a.errors[0].Text, want) ||
		!strings.Contains(a.errors[0].Text, "nothing of it was forwarded") {
		rc.t.Fatalf("answer %q, want a 4002 containing %q", a.errText(), want)
	}
	if _, err := rc.r.ReadMessage(); err == nil {
		rc.t.Fatal("the connection stayed open after malformed input")
	}
}

// TestMalformed sends input that does not decode, before and after the
// login: each gets a clear TDS error and a malformed_packet event, and
// nothing reaches the TDS server.
func TestMalformed(t *testing.T) {
	s := newStack(t, stackOptions{})
	random := make([]byte, 512)
	_, _ = rand.Read(random)
	random[0] = 0x55 // not a packet type, so the case is stable
	pre := func(rc *rawClient) { rc.prelogin() }
	bad := login7("alice", "app")
	binary.LittleEndian.PutUint16(bad[40:], 0x0FF0) // UserName's offset
	short := login7("alice", "app")
	binary.LittleEndian.PutUint16(short[42:], 500) // UserName's length
	cases := []struct {
		name  string
		setup func(*rawClient)
		send  func(*rawClient)
		want  string
	}{
		{"random bytes", nil, func(rc *rawClient) { rc.c.Write(random) }, "unknown packet type 0x55"},
		{"truncated header", nil, func(rc *rawClient) { rc.c.Write([]byte{0x12, 0x01, 0x00}); rc.c.CloseWrite() }, "truncated packet header"},
		{"truncated packet", nil, func(rc *rawClient) { rc.c.Write([]byte{0x12, 0x01, 0x00, 0x40, 0, 0, 1, 0, 1, 2}); rc.c.CloseWrite() }, "truncated"},
		{"login before prelogin", nil, func(rc *rawClient) { rc.send(tds.PacketLogin7, login7("alice", "app")) }, "not PRELOGIN"},
		{"LOGIN7 offset past the packet", pre, func(rc *rawClient) { rc.send(tds.PacketLogin7, bad) }, "UserName (offset 4080"},
		{"LOGIN7 length past the packet", pre, func(rc *rawClient) { rc.send(tds.PacketLogin7, short) }, "UserName has 500 characters"},
		{"LOGIN7 length field", pre, func(rc *rawClient) { rc.send(tds.PacketLogin7, append(login7("alice", "app"), 0, 0)) }, "length field says"},
	}
	loggedIn := func(rc *rawClient) { rc.login("alice", "app") }
	rpc := func(raw []byte) []byte {
		b, err := tds.AppendRPC(nil, 0, tds.Call{ProcID: tds.ProcExecuteSQL, Params: []tds.ParamValue{
			{Type: tds.NVarChar, Value: "select @p1"}, {Type: tds.NVarChar, Value: "@p1 int"}, {Name: "@p1", Raw: raw}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases = append(cases, []struct {
		name  string
		setup func(*rawClient)
		send  func(*rawClient)
		want  string
	}{
		{"RPC with a bad parameter type", loggedIn, func(rc *rawClient) { rc.send(tds.PacketRPC, rpc([]byte{0x99, 4, 1, 0, 0, 0})) }, "unknown data type 0x99"},
		{"RPC value longer than its type", loggedIn, func(rc *rawClient) { rc.send(tds.PacketRPC, rpc([]byte{tds.TypeIntN, 4, 8, 1, 0, 0, 0, 0, 0, 0, 0})) }, "int value of 8 bytes"},
		{"RPC value past the message", loggedIn, func(rc *rawClient) {
			rc.send(tds.PacketRPC, rpc([]byte{tds.TypeNVarChar, 0x40, 0, 9, 4, 0xD0, 0, 0x34, 0x30, 0, 'a', 0}))
		}, "runs past the end"},
		{"batch of odd length", loggedIn, func(rc *rawClient) { rc.send(tds.PacketSQLBatch, append(tds.AppendSQLBatch(nil, 0, "select 1"), 'x')) }, "not UCS-2"},
		{"batch without ALL_HEADERS", loggedIn, func(rc *rawClient) { rc.send(tds.PacketSQLBatch, tds.AppendUCS2(nil, "select 1")) }, "ALL_HEADERS"},
		{"packet over the negotiated size", loggedIn, func(rc *rawClient) {
			b := tds.AppendPackets(nil, tds.PacketSQLBatch, tds.AppendSQLBatch(nil, 0, strings.Repeat("x", 3000)), 8000, 0)
			rc.c.Write(b)
		}, "exceeds the negotiated packet size"},
		{"PRELOGIN after login", loggedIn, func(rc *rawClient) {
			p := &tds.Prelogin{}
			p.Set(tds.PreloginVersion, tds.VersionBytes(1, 0, 0, 0))
			rc.send(tds.PacketPrelogin, p.Append(nil))
		}, "PRELOGIN message after login"},
		{"attention with a payload", loggedIn, func(rc *rawClient) { rc.send(tds.PacketAttention, []byte{1}) }, "an Attention message with a 1-byte payload"},
	}...)
	before := len(s.tds.Logins())
	logins := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc := s.raw(t)
			if c.setup != nil {
				c.setup(rc)
				if c.name != "LOGIN7 offset past the packet" && c.name != "LOGIN7 length past the packet" && c.name != "LOGIN7 length field" {
					logins++
				}
			}
			c.send(rc)
			rc.expectMalformed(c.want)
		})
	}
	evs := s.WaitAudit(t, "every malformed_packet event and session end", func(evs []map[string]any) bool {
		return agenttest.Count("db.session.malformed_packet", len(cases))(evs) && agenttest.Count("db.session.end", logins)(evs)
	})
	agenttest.CheckGapless(t, evs)
	for _, ev := range agenttest.OfType(evs, "db.session.malformed_packet") {
		if ev["direction"] != "client" || ev["code"] != "TGDB004E" || ev["user"] != "alice@example.com" {
			t.Fatalf("malformed event %v", ev)
		}
		if p, _ := ev["packet_prefix"].(string); strings.Contains(p, fmt.Sprintf("%x", tds.AppendUCS2(nil, "not-used"))) {
			t.Fatalf("a password reached the audit: %v", ev)
		}
	}
	// The server records a login after it answered it, which the agent
	// and its events can see first: the last ones are waited for.
	for deadline := time.Now().Add(5 * time.Second); len(s.tds.Logins())-before < logins && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := len(s.tds.Logins()) - before; got != logins {
		t.Fatalf("%d logins at the server, want %d", got, logins)
	}
	if b, r := s.tds.Batches(), s.tds.RPCs(); len(b) != 0 || len(r) != 0 {
		t.Fatalf("the server received batches %q and RPCs %v", b, r)
	}
	if v := s.tds.Violations(); len(v) != 0 {
		t.Fatalf("malformed input reached the server: %q", v)
	}
}

// TestPreparedRPCs sends what ODBC drivers send: sp_prepare, sp_execute
// with the handle, sp_prepexec, sp_unprepare, two calls in one request,
// and an Attention with nothing running.
func TestPreparedRPCs(t *testing.T) {
	s := newStack(t, stackOptions{})
	rc := s.raw(t)
	rc.login("alice", "app")
	call := func(calls ...tds.Call) *answer {
		t.Helper()
		b, err := tds.AppendRPC(nil, 0, calls...)
		if err != nil {
			t.Fatal(err)
		}
		rc.send(tds.PacketRPC, b)
		a, err := rc.read()
		if err != nil {
			t.Fatal(err)
		}
		if len(a.errors) > 0 {
			t.Fatalf("RPC: %s", a.errText())
		}
		return a
	}
	handle := tds.ParamValue{Name: "@handle", Status: tds.ParamByRef, Type: tds.IntN4, Value: nil}
	a := call(tds.Call{ProcID: tds.ProcPrepare, Params: []tds.ParamValue{handle,
		{Type: tds.NVarChar, Value: "@a int, @b nvarchar(10)"}, {Type: tds.NVarChar, Value: "select @a, @b"}, {Type: tds.IntN4, Value: int64(1)}}})
	if len(a.values) != 1 {
		t.Fatalf("sp_prepare returned %v", a.values)
	}
	h := a.values[0]
	a = call(tds.Call{ProcID: tds.ProcExecute, Params: []tds.ParamValue{
		{Type: tds.IntN4, Value: mustInt(t, h)}, {Type: tds.IntN8, Value: int64(7)}, {Type: tds.NVarChar, Value: "seven"}}})
	if a.rows != 1 {
		t.Fatalf("sp_execute returned %d rows", a.rows)
	}
	call(tds.Call{ProcID: tds.ProcPrepExec, Params: []tds.ParamValue{handle,
		{Type: tds.NVarChar, Value: "@x bigint"}, {Type: tds.NVarChar, Value: "select @x"}, {Name: "@x", Type: tds.IntN8, Value: int64(99)}}})
	call(tds.Call{ProcID: tds.ProcUnprepare, Params: []tds.ParamValue{{Type: tds.IntN4, Value: mustInt(t, h)}}})
	call(
		tds.Call{ProcName: "sp_executesql", Params: []tds.ParamValue{{Type: tds.NVarChar, Value: "select 1"}}},
		tds.Call{ProcID: tds.ProcExecuteSQL, Params: []tds.ParamValue{{Type: tds.NVarMax, Value: "select @v"}, {Type: tds.NVarChar, Value: "@v varbinary(4)"}, {Name: "@v", Type: tds.VarBinary, Value: []byte{0xde, 0xad}}}},
	)
	rc.send(tds.PacketAttention, nil)
	a, err := rc.read()
	if err != nil || len(a.done) != 1 || a.done[0]&tds.DoneAttn == 0 {
		t.Fatalf("attention answer %+v %v", a, err)
	}
	rc.c.Close()
	evs := s.WaitAudit(t, "the session ended", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	rpcs := agenttest.OfType(evs, "db.session.sqlserver.rpc_request")
	if len(rpcs) != 6 {
		t.Fatalf("%d rpc events: %v", len(rpcs), rpcs)
	}
	want := []struct {
		proc, query, handle, defs string
		params                    []string
		types                     []string
	}{
		{"sp_prepare", "select @a, @b", "", "@a int, @b nvarchar(10)", nil, nil},
		{"sp_execute", "select @a, @b", h, "", []string{"7", "seven"}, []string{"bigint", "nvarchar(4000)"}},
		{"sp_prepexec", "select @x", "", "@x bigint", []string{"99"}, []string{"bigint"}},
		{"sp_unprepare", "select @a, @b", h, "", nil, nil},
		{"sp_executesql", "select 1", "", "", nil, nil},
		{"sp_executesql", "select @v", "", "@v varbinary(4)", []string{"0xdead"}, []string{"varbinary(8000)"}},
	}
	for i, w := range want {
		r := rpcs[i]
		if r["db_procedure"] != w.proc || r["db_query"] != w.query || str(r["db_prepared_handle"]) != w.handle || str(r["db_parameter_definitions"]) != w.defs ||
			!sameStrings(r["db_query_parameters"], w.params) || !sameStrings(r["db_parameter_types"], w.types) {
			t.Errorf("rpc event %d: %v, want %+v", i, r, w)
		}
	}
	if rpcs[0]["db_output_parameters"].([]any)[0] != "@handle" {
		t.Errorf("output parameters %v", rpcs[0]["db_output_parameters"])
	}
	if rpcs[4]["db_rpc_calls"] != float64(2) || rpcs[5]["db_rpc_call_index"] != float64(1) || rpcs[4]["db_procedure_id"] != nil {
		t.Errorf("batched calls %v %v", rpcs[4], rpcs[5])
	}
	at := agenttest.OfType(evs, "db.session.sqlserver.attention")
	if len(at) != 1 || at[0]["db_pending_requests"] != float64(0) {
		t.Fatalf("attention events %v", at)
	}
	if s.tds.Attentions() != 1 {
		t.Fatalf("the server got %d attentions", s.tds.Attentions())
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func sameStrings(v any, want []string) bool {
	got, _ := v.([]any)
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

func mustInt(t *testing.T, s string) int64 {
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAuditOutage stops the event store: a batch is refused with an error
// that says why and never reaches the server; once the store is back the
// next batch runs and the refusal is on record.
func TestAuditOutage(t *testing.T) {
	s := newStack(t, stackOptions{})
	rc := s.raw(t)
	rc.login("alice", "app")
	s.NATS.Stop()
	rc.send(tds.PacketSQLBatch, tds.AppendSQLBatch(nil, 0, "select 'refused'"))
	a, err := rc.read()
	if err != nil || len(a.errors) != 1 || a.errors[0].Number != 50000 || !strings.Contains(a.errors[0].Text, "audit store unavailable") ||
		!strings.Contains(a.errors[0].Text, "not sent to the database") {
		t.Fatalf("answer while the store is down: %+v %v", a, err)
	}
	if err := s.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		rc.send(tds.PacketSQLBatch, tds.AppendSQLBatch(nil, 0, "select 'after'"))
		a, err = rc.read()
		if err != nil {
			t.Fatal(err)
		}
		if len(a.errors) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not come back: %s", a.errText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, b := range s.tds.Batches() {
		if strings.Contains(b, "refused") {
			t.Fatal("a refused batch reached the server")
		}
	}
	rc.c.Close()
	evs := s.WaitAudit(t, "the session ended", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	var refused bool
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		if r["db_error_code"] == "50000" && strings.Contains(str(r["error"]), "audit store unavailable") {
			refused = true
		}
	}
	if !refused {
		t.Fatal("the refusal is not on record")
	}
}

// TestRefusals checks what a user sees when the agent cannot let them in:
// a role that does not allow the database user, a SQL Server certificate
// from an unknown CA, a wrong KDC host name.
func TestRefusals(t *testing.T) {
	ctx := context.Background()
	ping := func(s *stack, user string) error {
		db, err := sql.Open("sqlserver", mssqlDSN(s.tunnel, user, "app", "disable"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		return db.PingContext(ctx)
	}
	s := newStack(t, stackOptions{})
	var me mssql.Error
	if err := ping(s, "bob"); !errors.As(err, &me) || me.Number != 18456 || !strings.Contains(me.Message, `db_user "bob" is not allowed`) {
		t.Fatalf("bob: %v", err)
	}
	s2 := newStack(t, stackOptions{tls: func(c *config.DatabaseTLS) { c.CACertFile = s.kdc.DomainCAFile }})
	if err := ping(s2, "alice"); !errors.As(err, &me) || !strings.Contains(me.Message, "database CA unknown") {
		t.Fatalf("unknown database CA: %v", err)
	}
	s3 := newStack(t, stackOptions{ad: func(ad *config.AD) { ad.KDCHostName = strings.Replace(ad.KDCHostName, "localhost", "127.0.0.1", 1) }})
	if err := ping(s3, "alice"); !errors.As(err, &me) || !strings.Contains(me.Message, "does not name ad.kdc_host_name") {
		t.Fatalf("wrong KDC host name: %v", err)
	}
	for _, st := range []*stack{s, s2, s3} {
		if n := len(st.tds.Logins()); n != 0 {
			t.Fatalf("%d logins reached the server", n)
		}
	}
}
