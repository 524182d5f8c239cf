package wire

import (
	"bytes"
	"testing"
)

// BenchmarkReadPacket reads a stream of 256-byte packets.
func BenchmarkReadPacket(b *testing.B) {
	const n = 1024
	var stream []byte
	payload := bytes.Repeat([]byte("q"), 256)
	for i := 0; i < n; i++ {
		stream, _ = AppendPacket(stream, uint8(i), payload)
	}
	src := bytes.NewReader(stream)
	r := NewReader(src, 0)
	b.SetBytes(int64(len(payload) + 4))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%n == 0 {
			src.Reset(stream)
			r.SetSeq(0)
		}
		if _, err := r.ReadPacket(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}

// BenchmarkDecodeQuery decodes a typical OLTP COM_QUERY.
func BenchmarkDecodeQuery(b *testing.B) {
	payload, _ := (&Query{Query: "SELECT c FROM sbtest1 WHERE id BETWEEN 5012 AND 5111 ORDER BY c"}).Encode(nil, allCaps41)
	benchDecodeCommand(b, payload, nil)
}

// BenchmarkDecodeStmtExecute decodes a COM_STMT_EXECUTE with 8 parameters
// of mixed types (sysbench's UPDATE/INSERT shapes).
func BenchmarkDecodeStmtExecute(b *testing.B) {
	stmts := NewStatements()
	stmts.Prepared(&StmtPrepareOK{StatementID: 1, NumParams: 8})
	p := func(t FieldType, text string) Param {
		return Param{ParamType: ParamType{Type: t}, Value: Value{Text: text}}
	}
	exec := &StmtExecute{StatementID: 1, IterationCount: 1, NewParamsBound: true, Params: []Param{
		p(TypeLongLong, "5012"), p(TypeLong, "-7"), p(TypeString, "68487932199-96439406143-93774651418-41631865787"),
		p(TypeString, "22195207048-70116052123-74140395089"), p(TypeDouble, "3.75"), p(TypeDateTime, "2024-05-06 07:08:09"),
		p(TypeNewDecimal, "1234.50"), {ParamType: ParamType{Type: TypeLong}, Value: Value{Null: true}}}}
	payload, err := exec.Encode(nil, allCaps41)
	if err != nil {
		b.Fatal(err)
	}
	benchDecodeCommand(b, payload, stmts)
}

// benchDecodeCommand measures decoding the command payload.
func benchDecodeCommand(b *testing.B, payload []byte, stmts StmtLookup) {
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := DecodeCommand(payload, allCaps41, stmts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}

// BenchmarkResponseRows follows a 100-row text result set.
func BenchmarkResponseRows(b *testing.B) {
	caps := allCaps41
	col := (&ColumnDefinition41{Catalog: "def", Schema: "sbtest", Table: "sbtest1", Name: "c", Type: TypeString}).Encode(nil, caps)
	row, _ := EncodeTextRow(nil, []Value{{Text: "68487932199-96439406143-93774651418-41631865787-96406072701"}})
	end := (&OKPacket{Header: EOFHeader, Status: ServerStatusAutocommit}).Encode(nil, caps)
	packets := [][]byte{{1}, col}
	for i := 0; i < 100; i++ {
		packets = append(packets, row)
	}
	packets = append(packets, end)
	d := NewResponseDecoder(caps)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		d.Begin(ComQuery)
		for _, p := range packets {
			if _, err := d.Feed(p); err != nil {
				b.Fatal(err)
			}
		}
		if !d.Done() {
			b.Fatal("not done")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "responses/s")
}
