package postgres

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/config"
)

func benchSession(b *testing.B) *agent.Session {
	db, err := agent.NewDatabase(config.Database{Name: "pg", Protocol: "postgres", URI: "h:1"})
	if err != nil {
		b.Fatal(err)
	}
	s := agent.NewSession(agent.SessionOptions{Cluster: "c", Recorder: nopRecorder{}, Database: db, DBUser: "app", DBName: "app"})
	b.Cleanup(func() { s.Close(nil) })
	return s
}

// BenchmarkClientBatch measures decoding one client batch and building and
// stamping its events, as the strict path does before forwarding: a
// pgbench -M prepared statement (Bind, Execute, Sync) and a -M simple one.
func BenchmarkClientBatch(b *testing.B) {
	preparedBatch := encodeAll(b,
		&pgproto3.Bind{PreparedStatement: "P0_5", ParameterFormatCodes: []int16{0}, Parameters: [][]byte{[]byte("-2345"), []byte("73412")}},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	simple := encodeAll(b, &pgproto3.Query{String: "UPDATE pgbench_accounts SET abalance = abalance + -2345 WHERE aid = 73412;"})
	for _, c := range []struct {
		name  string
		batch []byte
	}{{"prepared", preparedBatch}, {"simple", simple}} {
		b.Run(c.name, func(b *testing.B) {
			sess := benchSession(b)
			dec := newClientDecoder(DefaultMaxMessage, DefaultMaxCopyData, DefaultMaxParam, newStmtQueue())
			dec.refuseList = DefaultRefusedParameters
			dec.stmts["P0_5"] = &prepared{name: "P0_5", query: "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;", oids: []uint32{23, 23}}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			evs := 0
			for range b.N {
				_, _, mal := dec.decode(c.batch, time.Now())
				if mal != nil {
					b.Fatal(mal)
				}
				evs += len(dec.evs)
				if err := sess.Gate(ctx, dec.evs...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(evs)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkCopyIn measures decoding the client reads of a COPY FROM STDIN
// (32 KiB of CopyData messages of 64 rows each, as psql sends them) and
// forwarding decisions: no event is built or stored per read, only a
// summary every 8 MiB.
func BenchmarkCopyIn(b *testing.B) {
	row := []byte("73412\t1\t-2345\t                                                                                    \n")
	var data []byte
	for range 64 {
		data = append(data, row...)
	}
	var batch []byte
	for len(batch)+len(data)+5 <= clientBuffer {
		batch, _ = (&pgproto3.CopyData{Data: data}).Encode(batch)
	}
	sess := benchSession(b)
	dec := newClientDecoder(DefaultMaxMessage, DefaultMaxCopyData, DefaultMaxParam, newStmtQueue())
	b.SetBytes(int64(len(batch)))
	b.ReportAllocs()
	b.ResetTimer()
	evs := 0
	for range b.N {
		_, _, mal := dec.decode(batch, time.Now())
		if mal != nil {
			b.Fatal(mal)
		}
		evs += len(dec.evs)
		if dec.gated() {
			b.Fatal("copy data gated")
		}
		if err := sess.Emit(dec.evs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(evs)/float64(b.N), "events/read")
}

// BenchmarkServerScan measures scanning the server stream: a SELECT of
// rows DataRows of about 100 bytes, its CommandComplete and ReadyForQuery,
// read in 16 KiB chunks as TLS delivers them.
func BenchmarkServerScan(b *testing.B) {
	for _, rows := range []int{1, 1000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			var stream []byte
			row := &pgproto3.DataRow{Values: [][]byte{[]byte("73412"), []byte("1"), []byte("-2345"), make([]byte, 84)}}
			stream, _ = (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("aid")}}}).Encode(stream)
			for range rows {
				stream, _ = row.Encode(stream)
			}
			stream, _ = (&pgproto3.CommandComplete{CommandTag: []byte(fmt.Sprintf("SELECT %d", rows))}).Encode(stream)
			stream, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(stream)
			p := scanProxy(b)
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for off := 0; off < len(stream); off += 16 << 10 {
					if err := p.scan(stream[off:min(off+16<<10, len(stream))]); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N)*float64(rows)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkRelay measures the whole relay of one simple-query round trip:
// the client loop decodes, gates and forwards the Query, the server loop
// scans and forwards CommandComplete and ReadyForQuery, over in-memory
// pipes so that the figure is the relay's own work.
func BenchmarkRelay(b *testing.B) {
	query := encodeAll(b, &pgproto3.Query{String: "SELECT abalance FROM pgbench_accounts WHERE aid = 73412;"})
	answer := encodeAll(b, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	sess := benchSession(b)
	cTest, cAgent := net.Pipe()
	sAgent, sTest := net.Pipe()
	p := &proxy{Relay: agent.Relay{Tally: agent.Tally{Started: time.Now()}, Sess: sess, Client: cAgent}, e: New(Options{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.run(ctx, &upstream{conn: sAgent, r: sAgent}) }()
	go func() {
		// The database: one answer per query.
		got := make([]byte, len(query))
		for {
			if _, err := io.ReadFull(sTest, got); err != nil {
				return
			}
			if _, err := sTest.Write(answer); err != nil {
				return
			}
		}
	}()
	got := make([]byte, len(answer))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := cTest.Write(query); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(cTest, got); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cTest.Close()
	sTest.Close()
	cancel()
	<-done
}
