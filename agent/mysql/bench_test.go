package mysql

import (
	"context"
	"testing"

	"github.com/tollgate-db/tollgate/agent/mysql/wire"
)

// BenchmarkDecodeQuery measures one COM_QUERY through decoding, gating
// (a recorder that stores nothing) and forwarding.
func BenchmarkDecodeQuery(b *testing.B) {
	d, _, server := testDecoder(b, &recorder{})
	in := packet(0, append([]byte{byte(wire.ComQuery)}, "SELECT c FROM sbtest1 WHERE id=4242"...))
	benchProcess(b, d, server, in)
}

// BenchmarkDecodeExecute measures one COM_STMT_EXECUTE with two typed
// parameters: decoding them with the statement tracker into an event.
func BenchmarkDecodeExecute(b *testing.B) {
	d, _, server := testDecoder(b, &recorder{})
	d.p.stmts.Prepared(&wire.StmtPrepareOK{StatementID: 1, NumParams: 2, NumColumns: 1})
	d.p.queries[1] = "SELECT c FROM sbtest1 WHERE id BETWEEN ? AND ?"
	exec := &wire.StmtExecute{StatementID: 1, IterationCount: 1, NewParamsBound: true, Params: []wire.Param{
		{ParamType: wire.ParamType{Type: wire.TypeLong}, Value: wire.Value{Text: "4242"}},
		{ParamType: wire.ParamType{Type: wire.TypeVarString}, Value: wire.Value{Text: "68487932199-96439406143"}},
	}}
	payload, err := exec.Encode(nil, d.p.caps)
	if err != nil {
		b.Fatal(err)
	}
	in := packet(0, payload)
	benchProcess(b, d, server, in)
}

// benchProcess measures d taking the client packet in, the server's
// buffer emptied after each.
func benchProcess(b *testing.B, d *clientDecoder, server *sink, in []byte) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := d.process(ctx, in); err != nil {
			b.Fatal(err)
		}
		server.buf = server.buf[:0]
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkScanResultSet measures following a 10-row text result set from
// the server into one result event.
func BenchmarkScanResultSet(b *testing.B) {
	d, _, _ := testDecoder(b, &recorder{})
	p := d.p
	caps := p.caps
	var resp []byte
	seq := uint8(1)
	resp, seq = wire.AppendPacket(resp, seq, wire.AppendLenEncInt(nil, 1))
	col := (&wire.ColumnDefinition41{Catalog: "def", Schema: "test", Table: "sbtest1", OrgTable: "sbtest1", Name: "c", OrgName: "c", CharacterSet: 45, ColumnLength: 480, Type: wire.TypeString}).Encode(nil, caps)
	resp, seq = wire.AppendPacket(resp, seq, col)
	for range 10 {
		resp, seq = wire.AppendPacket(resp, seq, wire.AppendLenEncString(nil, "68487932199-96439406143-93774651418-34139416148-09542766463"))
	}
	resp, _ = wire.AppendPacket(resp, seq, (&wire.OKPacket{Header: wire.EOFHeader, Status: wire.ServerStatusAutocommit}).Encode(nil, caps))
	sc := &serverScanner{p: p, dec: wire.NewResponseDecoder(caps)}
	q := newCmdQueue()
	p.q = q
	b.SetBytes(int64(len(resp)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		q.push([]pending{{cmd: wire.ComQuery}})
		if err := sc.scan(resp); err != nil {
			b.Fatal(err)
		}
		if sc.active {
			b.Fatal("response not complete")
		}
	}
}
