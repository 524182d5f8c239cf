package postgres

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-db/tollgate/events"
)

func selectOne() []pgproto3.BackendMessage {
	return []pgproto3.BackendMessage{
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}},
		&pgproto3.DataRow{Values: [][]byte{[]byte("1")}},
		&pgproto3.DataRow{Values: [][]byte{[]byte("2")}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 2")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	}
}

// waitFor polls until cond holds: events of the async path land a moment
// after the client saw the answer.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSimpleQueryEventsAndResult(t *testing.T) {
	ps := newPipeSession(t, true)
	ps.send(t, &pgproto3.Query{String: "select x from t"})
	q, ok := ps.serverReceive(t).(*pgproto3.Query)
	if !ok || q.String != "select x from t" {
		t.Fatalf("database got %+v", q)
	}
	// Gated: the query event was stored before the database saw it.
	if qs := ofType[events.Query](ps.rec); len(qs) != 1 || qs[0].Query != "select x from t" || qs[0].EI != 0 ||
		qs[0].Envelope.User != "alice" || qs[0].Database.User != "app" || qs[0].Database.Service != "pg" || qs[0].SID != ps.sess.ID {
		t.Fatalf("query events %+v", qs)
	}
	ps.reply(t, selectOne()...)
	for _, want := range []string{"RowDescription", "DataRow", "DataRow", "CommandComplete", "ReadyForQuery"} {
		m := ps.clientReceive(t)
		if got := strings.TrimPrefix(typeName(m), "*pgproto3."); got != want {
			t.Fatalf("client got %s, want %s", got, want)
		}
	}
	waitFor(t, "result event", func() bool { return len(ofType[events.Result](ps.rec)) == 1 })
	r := ofType[events.Result](ps.rec)[0]
	if r.CommandTag != "SELECT 2" || r.Rows != 2 || !r.Success || r.EI != 1 || r.Bytes == 0 || r.Code != "TGDB003I" {
		t.Fatalf("result %+v", r)
	}
}

func TestErrorResultAndMultiStatement(t *testing.T) {
	ps := newPipeSession(t, true)
	ps.send(t, &pgproto3.Query{String: "insert into t values (1); select nope"})
	ps.serverReceive(t)
	ps.reply(t,
		&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")},
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42703", Message: `column "nope" does not exist`},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	for range 3 {
		ps.clientReceive(t)
	}
	waitFor(t, "two results", func() bool { return len(ofType[events.Result](ps.rec)) == 2 })
	rs := ofType[events.Result](ps.rec)
	if rs[0].CommandTag != "INSERT 0 1" || rs[0].Rows != 1 || !rs[0].Success {
		t.Fatalf("first result %+v", rs[0])
	}
	if rs[1].Success || rs[1].ErrorCode != "42703" || !strings.Contains(rs[1].ErrorMessage, "nope") || rs[1].Code != "TGDB003W" {
		t.Fatalf("second result %+v", rs[1])
	}
}

func TestExtendedProtocolBinaryParameters(t *testing.T) {
	ps := newPipeSession(t, true)
	int4 := make([]byte, 4)
	binary.BigEndian.PutUint32(int4, 42)
	uuid := []byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0}
	ps.send(t,
		&pgproto3.Parse{Name: "s1", Query: "select $1::int4, $2::text, $3::uuid, $4::bytea, $5::int8", ParameterOIDs: []uint32{23, 25, 2950, 17, 0}},
		&pgproto3.Bind{DestinationPortal: "", PreparedStatement: "s1", ParameterFormatCodes: []int16{1, 0, 1, 1, 1},
			Parameters: [][]byte{int4, []byte("héllo"), uuid, {0xff, 0x00}, nil}},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{},
		&pgproto3.Sync{})
	for _, want := range []string{"Parse", "Bind", "Describe", "Execute", "Sync"} {
		if got := strings.TrimPrefix(typeName(ps.serverReceive(t)), "*pgproto3."); got != want {
			t.Fatalf("database got %s, want %s", got, want)
		}
	}
	ex := ofType[events.PostgresExecute](ps.rec)
	if len(ex) != 1 {
		t.Fatalf("execute events %d", len(ex))
	}
	want := []string{"42", "héllo", "12345678-9abc-def0-1234-56789abcdef0", "/wA=", "NULL"}
	if strings.Join(ex[0].Parameters, "|") != strings.Join(want, "|") || ex[0].StatementName != "s1" || !strings.HasPrefix(ex[0].Query, "select $1") {
		t.Fatalf("execute %+v", ex[0])
	}
	if p := ofType[events.PostgresParse](ps.rec); len(p) != 1 || p[0].StatementName != "s1" || len(p[0].ParameterOIDs) != 5 {
		t.Fatalf("parse %+v", p)
	}
	// The Execute in the same batch carries the Bind's parameters: one
	// event per execution.
	if b := ofType[events.PostgresBind](ps.rec); len(b) != 0 {
		t.Fatalf("bind events %+v, want none (folded into the execute event)", b)
	}
	ps.reply(t, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.NoData{},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	for range 5 {
		ps.clientReceive(t)
	}
	waitFor(t, "result", func() bool { return len(ofType[events.Result](ps.rec)) == 1 })
}

func TestParameterTypesFromDescribe(t *testing.T) {
	// pgx learns parameter types from the server's ParameterDescription and
	// sends binary values without declaring types in Parse.
	ps := newPipeSession(t, true)
	ps.send(t, &pgproto3.Parse{Name: "s", Query: "select $1"}, &pgproto3.Describe{ObjectType: 'S', Name: "s"}, &pgproto3.Sync{})
	for range 3 {
		ps.serverReceive(t)
	}
	ps.reply(t, &pgproto3.ParseComplete{}, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{20}}, &pgproto3.NoData{}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	for range 4 {
		ps.clientReceive(t)
	}
	v := make([]byte, 8)
	binary.BigEndian.PutUint64(v, uint64(1<<40))
	ps.send(t, &pgproto3.Bind{PreparedStatement: "s", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{v}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	for range 3 {
		ps.serverReceive(t)
	}
	ex := ofType[events.PostgresExecute](ps.rec)
	if len(ex) != 1 || len(ex[0].Parameters) != 1 || ex[0].Parameters[0] != "1099511627776" {
		t.Fatalf("execute %+v", ex)
	}
}

func TestStrictRefusalForwardsNothing(t *testing.T) {
	ps := newPipeSession(t, true)
	ps.rec.setDown(true)
	ps.send(t, &pgproto3.Query{String: "delete from accounts"})
	er, ok := ps.clientReceive(t).(*pgproto3.ErrorResponse)
	if !ok || er.Code != stateAuditUnavailable || !strings.Contains(er.Message, "audit store unavailable") {
		t.Fatalf("client got %+v", er)
	}
	if z, ok := ps.clientReceive(t).(*pgproto3.ReadyForQuery); !ok || z.TxStatus != 'I' {
		t.Fatalf("client got %+v, want ReadyForQuery", z)
	}
	ps.serverGetsNothing(t)
	// Extended protocol too: an error, then ReadyForQuery at Sync.
	ps.send(t, &pgproto3.Parse{Query: "drop table accounts"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if _, ok := ps.clientReceive(t).(*pgproto3.ErrorResponse); !ok {
		t.Fatal("want ErrorResponse")
	}
	if _, ok := ps.clientReceive(t).(*pgproto3.ReadyForQuery); !ok {
		t.Fatal("want ReadyForQuery")
	}
	ps.serverGetsNothing(t)
	if n := len(ps.rec.events()); n != 0 {
		t.Fatalf("%d events stored while the store was down", n)
	}

	// The store is back: the refused events and the refusals are stored
	// first, with their original ei, then the new statement.
	ps.rec.setDown(false)
	ps.send(t, &pgproto3.Query{String: "select 1"})
	if q := ps.serverReceive(t).(*pgproto3.Query); q.String != "select 1" {
		t.Fatalf("database got %q", q.String)
	}
	evs := ps.rec.events()
	var kinds []string
	for i, ev := range evs {
		if ei := ev.(events.SessionEvent).SessionHeader().EI; ei != uint64(i) {
			t.Fatalf("event %d has ei %d", i, ei)
		}
		kinds = append(kinds, ev.Header().Type)
	}
	want := "db.session.query db.session.result db.session.postgres.parse db.session.postgres.execute db.session.result db.session.query"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("stored %s", strings.Join(kinds, " "))
	}
	if r := evs[1].(*events.Result); r.Success || r.ErrorCode != stateAuditUnavailable {
		t.Fatalf("refusal %+v", r)
	}
}

func TestMalformedClientInput(t *testing.T) {
	cases := []struct {
		name   string
		bytes  []byte
		reason string
		prefix bool
	}{
		{"unknown type", []byte("Zxxxxxxxx"), "unknown message type 0x5a", true},
		{"oversized", []byte{'Q', 0x7f, 0xff, 0xff, 0xff}, "over the limit", true},
		{"short length", []byte{'Q', 0, 0, 0, 2}, "less than its own length", true},
		{"no terminator", []byte{'Q', 0, 0, 0, 7, 'a', 'b', 'c'}, "does not decode", true},
		{"password", append([]byte{'p', 0, 0, 0, 11}, "secret1\x00"...), "password", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps := newPipeSession(t, true)
			go func() { _, _ = ps.client.Write(c.bytes) }()
			er, ok := ps.clientReceive(t).(*pgproto3.ErrorResponse)
			if !ok || er.Code != stateProtocolViolation || !strings.Contains(er.Message, c.reason) {
				t.Fatalf("client got %+v", er)
			}
			ps.serverGetsNothing(t)
			waitFor(t, "malformed event", func() bool { return len(ofType[events.MalformedPacket](ps.rec)) == 1 })
			m := ofType[events.MalformedPacket](ps.rec)[0]
			if m.Direction != "client" || !strings.Contains(m.Reason, c.reason) || (m.Prefix != "") != c.prefix {
				t.Fatalf("event %+v", m)
			}
			if strings.Contains(m.Prefix, "736563726574") { // "secret"
				t.Fatal("password bytes in event")
			}
			waitFor(t, "session end", func() bool { return len(ofType[events.SessionEnd](ps.rec)) == 1 })
		})
	}
}

func TestTruncatedMessage(t *testing.T) {
	ps := newPipeSession(t, true)
	_, _ = ps.client.Write([]byte{'Q', 0, 0, 0, 20, 's', 'e'})
	ps.client.Close()
	waitFor(t, "malformed event", func() bool { return len(ofType[events.MalformedPacket](ps.rec)) == 1 })
	if m := ofType[events.MalformedPacket](ps.rec)[0]; !strings.Contains(m.Reason, "truncated") {
		t.Fatalf("event %+v", m)
	}
	ps.serverGetsNothing(t)
}

func TestCopyInCountsBytes(t *testing.T) {
	ps := newPipeSession(t, true)
	ps.send(t, &pgproto3.Query{String: "copy t from stdin"})
	ps.serverReceive(t)
	ps.reply(t, &pgproto3.CopyInResponse{OverallFormat: 0, ColumnFormatCodes: []uint16{0}})
	ps.clientReceive(t)
	waitFor(t, "copy mode", func() bool { return true })
	ps.send(t, &pgproto3.CopyData{Data: []byte("1\tsecret-row\n")}, &pgproto3.CopyData{Data: []byte("2\tother\n")}, &pgproto3.CopyDone{})
	for range 3 {
		ps.serverReceive(t)
	}
	// Copy summaries are stored without holding back the data.
	waitFor(t, "copy summary", func() bool { return len(ofType[events.PostgresCopy](ps.rec)) > 0 })
	cs := ofType[events.PostgresCopy](ps.rec)
	if len(cs) != 1 || cs[0].Phase != "done" || cs[0].Messages != 2 || cs[0].Bytes != 21 || cs[0].TotalBytes != 21 {
		t.Fatalf("copy events %+v", cs)
	}
	for _, ev := range ps.rec.events() {
		if strings.Contains(fmt.Sprintf("%+v", ev), "secret-row") {
			t.Fatal("row data recorded")
		}
	}
	ps.reply(t, &pgproto3.CommandComplete{CommandTag: []byte("COPY 2")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	ps.clientReceive(t)
	ps.clientReceive(t)
	waitFor(t, "result", func() bool { return len(ofType[events.Result](ps.rec)) == 1 })
	if r := ofType[events.Result](ps.rec)[0]; r.Rows != 2 || r.CommandTag != "COPY 2" {
		t.Fatalf("result %+v", r)
	}
}

// TestCopyDataIsNotGated: the COPY statement is stored before it runs, but
// its rows carry no statement, so an outage of the store during the COPY
// does not hold them back; the summary is stored once the store is back.
// A statement after the COPY is refused as usual.
func TestCopyDataIsNotGated(t *testing.T) {
	ps := newPipeSession(t, true)
	ps.send(t, &pgproto3.Query{String: "copy t from stdin"})
	ps.serverReceive(t)
	ps.reply(t, &pgproto3.CopyInResponse{})
	ps.clientReceive(t)
	ps.rec.setDown(true)
	ps.send(t, &pgproto3.CopyData{Data: []byte("1\n")})
	if d, ok := ps.serverReceive(t).(*pgproto3.CopyData); !ok || string(d.Data) != "1\n" {
		t.Fatalf("database got %+v, want the CopyData", d)
	}
	ps.send(t, &pgproto3.CopyData{Data: []byte("22\n")}, &pgproto3.CopyDone{})
	if _, ok := ps.serverReceive(t).(*pgproto3.CopyData); !ok {
		t.Fatal("want CopyData")
	}
	if _, ok := ps.serverReceive(t).(*pgproto3.CopyDone); !ok {
		t.Fatal("want CopyDone")
	}
	ps.reply(t, &pgproto3.CommandComplete{CommandTag: []byte("COPY 2")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	ps.clientReceive(t)
	ps.clientReceive(t)
	ps.send(t, &pgproto3.Query{String: "delete from t"})
	if er, ok := ps.clientReceive(t).(*pgproto3.ErrorResponse); !ok || er.Code != stateAuditUnavailable {
		t.Fatalf("client got %+v, want the refusal", er)
	}
	ps.clientReceive(t)
	ps.serverGetsNothing(t)
	ps.rec.setDown(false)
	waitFor(t, "copy summary stored by the retrying async path", func() bool {
		cs := ofType[events.PostgresCopy](ps.rec)
		return len(cs) == 1 && cs[0].Phase == "done" && cs[0].Messages == 2 && cs[0].TotalBytes == 5
	})
}

// TestBindWithoutExecuteKeepsItsEvent: a Bind whose Execute comes in a later
// batch, or never, keeps its own event; an Execute in the same batch as its
// Bind carries the parameters alone.
func TestBindWithoutExecuteKeepsItsEvent(t *testing.T) {
	ps := newPipeSession(t, true)
	ps.send(t, &pgproto3.Parse{Name: "s1", Query: "select $1::int4, $2::int4"},
		&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "s1", Parameters: [][]byte{[]byte("7"), []byte("8")}},
		&pgproto3.Bind{DestinationPortal: "p2", PreparedStatement: "s1", Parameters: [][]byte{[]byte("9"), []byte("10")}},
		&pgproto3.Execute{Portal: "p2"}, &pgproto3.Flush{})
	for range 5 {
		ps.serverReceive(t)
	}
	ps.send(t, &pgproto3.Execute{Portal: "p1"}, &pgproto3.Sync{})
	ps.serverReceive(t)
	ps.serverReceive(t)
	var kinds []string
	for _, ev := range ps.rec.events() {
		kinds = append(kinds, strings.TrimPrefix(ev.Header().Type, "db.session.postgres."))
	}
	if got := strings.Join(kinds, " "); got != "parse bind execute execute" {
		t.Fatalf("stored %s", got)
	}
	b := ofType[events.PostgresBind](ps.rec)
	ex := ofType[events.PostgresExecute](ps.rec)
	if b[0].PortalName != "p1" || strings.Join(b[0].Parameters, ",") != "7,8" {
		t.Fatalf("bind %+v", b[0])
	}
	if ex[0].PortalName != "p2" || strings.Join(ex[0].Parameters, ",") != "9,10" || ex[0].Query != "select $1::int4, $2::int4" ||
		ex[1].PortalName != "p1" || strings.Join(ex[1].Parameters, ",") != "7,8" || ex[1].StatementName != "s1" {
		t.Fatalf("executes %+v", ex)
	}
}

func TestAsyncModeDoesNotWait(t *testing.T) {
	ps := newPipeSession(t, false)
	ps.rec.setDown(true)
	ps.send(t, &pgproto3.Query{String: "select 1"})
	if q := ps.serverReceive(t).(*pgproto3.Query); q.String != "select 1" {
		t.Fatal(q.String)
	}
	ps.rec.setDown(false)
	waitFor(t, "query stored by the retrying async path", func() bool { return len(ofType[events.Query](ps.rec)) == 1 })
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }
