package sqlserver

import (
	"bytes"
	"testing"

	"github.com/tollgate-db/tollgate/agent/sqlserver/tds"
	"github.com/tollgate-db/tollgate/events"
)

func testProxy() *proxy {
	return &proxy{e: &Engine{opt: Options{MaxParam: DefaultMaxParam, MaxMessage: DefaultMaxMessage}}, version: tds.Version74, prepared: map[string]string{}}
}

func message(t testing.TB, typ byte, payload []byte) *tds.Message {
	r := tds.NewReader(bytes.NewReader(tds.AppendPackets(nil, typ, payload, tds.DefaultPacketSize, 0)))
	m, err := r.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	return &m
}

func rpcPayload(t testing.TB) []byte {
	b, err := tds.AppendRPC(nil, 0, tds.Call{ProcID: tds.ProcExecuteSQL, Params: []tds.ParamValue{
		{Type: tds.NVarChar, Value: "select * from orders where id = @p1 and owner = @p2"},
		{Type: tds.NVarChar, Value: "@p1 bigint,@p2 nvarchar(5)"},
		{Name: "@p1", Type: tds.IntN8, Value: int64(42)},
		{Name: "@p2", Type: tds.NVarChar, Value: "alice"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeEvents(t *testing.T) {
	p := testProxy()
	d := &decoder{p: p}
	evs, req, err := d.decode(message(t, tds.PacketRPC, rpcPayload(t)))
	if err != nil || req == nil || req.kind != "RPC" || len(evs) != 1 {
		t.Fatalf("%v %+v %d", err, req, len(evs))
	}
	ev := evs[0].(*events.SQLServerRPC)
	if ev.Procedure != "sp_executesql" || ev.Query != "select * from orders where id = @p1 and owner = @p2" ||
		ev.ParameterDefinitions != "@p1 bigint,@p2 nvarchar(5)" || len(ev.Parameters) != 2 || ev.Parameters[0] != "42" || ev.Parameters[1] != "alice" ||
		ev.ParameterNames[1] != "@p2" || ev.ParameterTypes[0] != "bigint" {
		t.Fatalf("%+v", ev)
	}
	evs, req, err = d.decode(message(t, tds.PacketAttention, nil))
	if err != nil || req != nil || evs[0].(*events.SQLServerAttention).Pending != 0 {
		t.Fatalf("attention: %v %+v", err, evs)
	}
	if _, _, err := d.decode(message(t, tds.PacketLogin7, []byte{1})); err == nil {
		t.Fatal("LOGIN7 after login decoded")
	}
	// A bulk load's rows are counted, never recorded.
	var bulk []byte
	bulk = tds.AppendColMetadata(bulk, []tds.Column{{Name: "id", Type: tds.IntN4}})
	for i := range 3 {
		bulk = append(bulk, tds.TokenRow, 4, byte(i), 0, 0, 0)
	}
	bulk = tds.AppendDone(bulk, tds.TokenDone, 0, 0, 0)
	evs, _, err = d.decode(message(t, tds.PacketBulkLoad, bulk))
	if err != nil || evs[0].(*events.SQLServerBulkLoad).Rows != 3 || evs[0].(*events.SQLServerBulkLoad).Columns != 1 {
		t.Fatalf("bulk: %v %+v", err, evs)
	}
}

// BenchmarkDecodeBatch is the engine's client path for a SQL batch:
// reassembled message to the event that is gated.
func BenchmarkDecodeBatch(b *testing.B) {
	q := "select o.id, o.total, c.name from orders o join customers c on c.id = o.customer where o.id = 42 and o.state = 'open'"
	m := message(b, tds.PacketSQLBatch, tds.AppendSQLBatch(nil, 0, q))
	benchDecode(b, m)
}

// BenchmarkDecodeRPC is the same for an sp_executesql call with two
// parameters.
func BenchmarkDecodeRPC(b *testing.B) {
	m := message(b, tds.PacketRPC, rpcPayload(b))
	benchDecode(b, m)
}

// benchDecode measures the decoder on the client message m.
func benchDecode(b *testing.B, m *tds.Message) {
	d := &decoder{p: testProxy()}
	b.SetBytes(int64(len(m.Raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := d.decode(m); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecode runs the engine's decoder (events included) on arbitrary
// messages of every client type.
func FuzzDecode(f *testing.F) {
	f.Add(tds.PacketRPC, rpcPayload(f))
	f.Add(tds.PacketSQLBatch, tds.AppendSQLBatch(nil, 0, "select 1"))
	f.Add(tds.PacketTransMgr, append(tds.AppendAllHeaders(nil, 0, 1), 5, 0, 2, 1, 't', 0))
	f.Add(tds.PacketAttention, []byte{})
	f.Add(tds.PacketBulkLoad, []byte{tds.TokenColMetadata, 1, 0, 0, 0, 0, 0, 1, 0, tds.TypeIntN, 4, 0, tds.TokenRow, 0})
	f.Fuzz(func(t *testing.T, typ byte, payload []byte) {
		d := &decoder{p: testProxy()}
		m := &tds.Message{Type: typ, Payload: payload, Raw: payload}
		evs, req, err := d.decode(m)
		if err != nil {
			return
		}
		if len(evs) == 0 {
			t.Fatal("a decoded message produced no event")
		}
		if typ == tds.PacketAttention && req != nil {
			t.Fatal("an Attention became a request")
		}
	})
}
