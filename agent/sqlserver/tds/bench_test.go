package tds

import (
	"bytes"
	"fmt"
	"testing"
)

// loop reads the same bytes over and over.
type loop struct {
	b   []byte
	off int
}

func (l *loop) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}

// BenchmarkReadBatch reads a framed SQL batch (a 120-character statement)
// and decodes its text: the client path of every batch.
func BenchmarkReadBatch(b *testing.B) {
	q := "select o.id, o.total, c.name from orders o join customers c on c.id = o.customer where o.id = 42 and o.state = 'open'"
	wire := AppendPackets(nil, PacketSQLBatch, AppendSQLBatch(nil, 0, q), DefaultPacketSize, 0)
	benchRead(b, wire, func(payload []byte) error {
		if _, text, err := ParseSQLBatch(payload, Version74); err != nil || len(text) != len(q) {
			return fmt.Errorf("batch of %d characters: %v", len(text), err)
		}
		return nil
	})
}

// BenchmarkReadRPC reads and decodes an sp_executesql call with three
// parameters (int, nvarchar, datetime2), as go-mssqldb sends them.
func BenchmarkReadRPC(b *testing.B) {
	rpc, err := AppendRPC(nil, 0, Call{ProcID: ProcExecuteSQL, Params: []ParamValue{
		{Type: NVarChar, Value: "select * from orders where id = @p1 and owner = @p2 and at > @p3"},
		{Type: NVarChar, Value: "@p1 bigint,@p2 nvarchar(5),@p3 datetime2(7)"},
		{Name: "@p1", Type: IntN8, Value: int64(42)},
		{Name: "@p2", Type: NVarChar, Value: "alice"},
		{Name: "@p3", Raw: cat([]byte{TypeDateTime2N, 7, 8}, []byte{0, 0, 0, 0, 0}, []byte{0x5B, 0x95, 0x0A})},
	}})
	if err != nil {
		b.Fatal(err)
	}
	wire := AppendPackets(nil, PacketRPC, rpc, DefaultPacketSize, 0)
	benchRead(b, wire, func(payload []byte) error {
		if _, calls, err := ParseRPC(payload, Version74, 64<<10); err != nil || len(calls[0].Params) != 5 {
			return fmt.Errorf("rpc: %v", err)
		}
		return nil
	})
}

// benchRead measures reading the framed message wire over and over and
// parsing its payload with parse.
func benchRead(b *testing.B, wire []byte, parse func(payload []byte) error) {
	r := NewReader(&loop{b: wire})
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := r.ReadMessage()
		if err != nil {
			b.Fatal(err)
		}
		if err := parse(m.Payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScanRows scans a server answer of 1000 rows of six columns
// (int, nvarchar(max), decimal, datetime2, ntext, sql_variant; half of
// them NBCROW) fed in 4 KiB packets: the server path, rows skipped by type.
func BenchmarkScanRows(b *testing.B) {
	stream := serverStream(b, 1000)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	var sc Scanner
	fn := func(*Token) error { return nil }
	for b.Loop() {
		for off := 0; off < len(stream); off += 4088 {
			if err := sc.Feed(stream[off:min(off+4088, len(stream))], fn); err != nil {
				b.Fatal(err)
			}
		}
		if sc.Pending() {
			b.Fatal("pending")
		}
	}
	_ = bytes.MinRead
}
