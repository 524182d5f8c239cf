package postgres

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
)

// nopRecorder stores nothing and always succeeds.
type nopRecorder struct{}

func (nopRecorder) Publish(context.Context, events.Event) error        { return nil }
func (nopRecorder) PublishBatch(context.Context, []events.Event) error { return nil }

func encodeAll(tb testing.TB, msgs ...interface{ Encode([]byte) ([]byte, error) }) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			tb.Fatal(err)
		}
	}
	return b
}

func clientSeeds(tb testing.TB) [][]byte {
	return [][]byte{
		encodeAll(tb, &pgproto3.Query{String: "select 1"}),
		encodeAll(tb, &pgproto3.Parse{Name: "s", Query: "select $1", ParameterOIDs: []uint32{23}},
			&pgproto3.Bind{PreparedStatement: "s", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 7}}},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}),
		encodeAll(tb, &pgproto3.CopyData{Data: []byte("1\tx\n")}, &pgproto3.CopyDone{}),
		encodeAll(tb, &pgproto3.CopyFail{Message: "no"}, &pgproto3.Close{ObjectType: 'S', Name: "s"}, &pgproto3.Flush{}),
		encodeAll(tb, &pgproto3.FunctionCall{Function: 1598, ArgFormatCodes: []uint16{1}, Arguments: [][]byte{{1, 2}}, ResultFormatCode: 1}),
		encodeAll(tb, &pgproto3.Terminate{}),
		{'p', 0, 0, 0, 8, 'p', 'w', 0, 0},
		{'Q', 0, 0, 0, 3},
		{'B', 0, 0, 0, 6, 0, 0},
	}
}

func FuzzClientMessages(f *testing.F) {
	for _, s := range clientSeeds(f) {
		f.Add(s, uint16(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		dec := newClientDecoder(1<<16, 1<<16, 256, newStmtQueue())
		// Feed the data in two reads, as a network would.
		cut := int(split) % (len(data) + 1)
		buf := append([]byte(nil), data[:cut]...)
		rest := data[cut:]
		for round := 0; round < 2; round++ {
			consumed, need, mal := dec.decode(buf, time.Now())
			if consumed < 0 || consumed > len(buf) {
				t.Fatalf("consumed %d of %d", consumed, len(buf))
			}
			if mal != nil {
				if mal.reason == "" {
					t.Fatal("malformed without a reason")
				}
				if mal.typ == 'p' && mal.prefix != nil {
					t.Fatal("password message recorded")
				}
				return
			}
			for _, s := range dec.segs {
				if s.From < 0 || s.To > consumed || s.From >= s.To {
					t.Fatalf("segment %+v outside %d", s, consumed)
				}
			}
			for _, ev := range dec.evs {
				if _, ok := events.SpecOf(ev); !ok {
					t.Fatalf("unregistered event %T", ev)
				}
			}
			if need > 0 && need <= len(buf)-consumed {
				t.Fatalf("needs %d with %d buffered", need, len(buf)-consumed)
			}
			buf = append(buf[consumed:], rest...)
			rest = nil
		}
	})
}

func serverSeeds(tb testing.TB) [][]byte {
	return [][]byte{
		encodeAll(tb,
			&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x"), DataTypeOID: 23}}},
			&pgproto3.DataRow{Values: [][]byte{[]byte("1")}}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
			&pgproto3.ReadyForQuery{TxStatus: 'I'}),
		encodeAll(tb, &pgproto3.ParseComplete{}, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{20}}, &pgproto3.NoData{},
			&pgproto3.BindComplete{}, &pgproto3.EmptyQueryResponse{}, &pgproto3.PortalSuspended{}, &pgproto3.ReadyForQuery{TxStatus: 'T'}),
		encodeAll(tb, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42P01", Message: "no"}, &pgproto3.NoticeResponse{Message: "n"},
			&pgproto3.NotificationResponse{PID: 1, Channel: "c", Payload: "p"}, &pgproto3.ParameterStatus{Name: "a", Value: "b"}),
		encodeAll(tb, &pgproto3.CopyInResponse{}, &pgproto3.CopyOutResponse{}, &pgproto3.CopyData{Data: []byte("x")}, &pgproto3.CopyDone{},
			&pgproto3.CommandComplete{CommandTag: []byte("COPY 1")}),
		{'Z', 0, 0, 0, 2},
		{'?', 0, 0, 0, 4},
	}
}

// scanProxy is a proxy with only what the server scanner uses.
func scanProxy(tb testing.TB) *proxy {
	db, err := agent.NewDatabase(config.Database{Name: "pg", Protocol: "postgres", URI: "h:1", AuditMode: "async"})
	if err != nil {
		tb.Fatal(err)
	}
	sess := agent.NewSession(agent.SessionOptions{Cluster: "c", Recorder: nopRecorder{}, Database: db,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	tb.Cleanup(func() { sess.Close(nil) })
	return &proxy{Relay: agent.Relay{Sess: sess}, q: newStmtQueue()}
}

type scanOutcome struct {
	err                 bool
	ready, rows, errs   uint64
	pendingRows, ptypes uint64
}

func scanIn(tb testing.TB, chunks ...[]byte) scanOutcome {
	p := scanProxy(tb)
	for _, c := range chunks {
		if err := p.scan(c); err != nil {
			return scanOutcome{err: true}
		}
	}
	return scanOutcome{ready: p.sc.ready, rows: p.Rows.Load(), errs: p.Errors.Load(), pendingRows: p.sc.rows, ptypes: p.sc.bytes}
}

func FuzzServerMessages(f *testing.F) {
	for _, s := range serverSeeds(f) {
		f.Add(s, uint16(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		whole := scanIn(t, data)
		cut := int(split) % (len(data) + 1)
		parts := scanIn(t, data[:cut], data[cut:])
		if whole.err {
			// An error found in one piece is found in two, at the latest
			// in the second.
			if !parts.err {
				t.Fatal("split input hid an error")
			}
			return
		}
		if whole != parts {
			t.Fatalf("scanning depends on read boundaries: %+v vs %+v", whole, parts)
		}
	})
}
