package mysql

import (
	"net"
	"testing"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/mysql/wire"
)

// A malformed server packet is replaced by the agent's ERR with that
// packet's sequence id, after the good packets of the same read: the
// scanner says where the bad packet began and which id it had.
func TestScannerLocatesBadPacket(t *testing.T) {
	caps := wire.ClientProtocol41
	col := (&wire.ColumnDefinition41{Catalog: "def", Name: "c", Type: wire.TypeLong}).Encode(nil, caps)
	frame := func(seq uint8, payloads ...[]byte) []byte {
		var out []byte
		for _, p := range payloads {
			out, seq = wire.AppendPacket(out, seq, p)
		}
		return out
	}
	newScanner := func() *serverScanner {
		p := &proxy{q: newCmdQueue()}
		p.q.push([]pending{{cmd: wire.ComQuery}})
		return &serverScanner{p: p, dec: wire.NewResponseDecoder(caps)}
	}

	// The column count itself is bad.
	sc := newScanner()
	if err := sc.scan(frame(1, wire.AppendLenEncInt(nil, wire.MaxColumns+1))); err == nil {
		t.Fatal("no error")
	}
	if sc.start != 0 || sc.startSeq != 1 {
		t.Fatalf("start %d seq %d, want 0 and 1", sc.start, sc.startSeq)
	}

	// Good packets, then one where an EOF belongs, in one read.
	sc = newScanner()
	good := frame(1, []byte{1}, col)
	if err := sc.scan(append(good, frame(3, []byte{0x01})...)); err == nil {
		t.Fatal("no error")
	}
	if sc.start != len(good) || sc.startSeq != 3 {
		t.Fatalf("start %d seq %d, want %d and 3", sc.start, sc.startSeq, len(good))
	}

	// The same over reads that split the bad packet's header: the client
	// already has its start, so there is no place for an ERR.
	sc = newScanner()
	stream := append(good, frame(3, []byte{0x01})...)
	cut := len(good) + 2
	if err := sc.scan(stream[:cut]); err != nil {
		t.Fatal(err)
	}
	if err := sc.scan(stream[cut:]); err == nil {
		t.Fatal("no error")
	}
	if sc.start != -1 {
		t.Fatalf("start %d, want -1", sc.start)
	}

	// A bad packet that begins a read.
	sc = newScanner()
	if err := sc.scan(good); err != nil {
		t.Fatal(err)
	}
	if err := sc.scan(frame(3, []byte{0x01})); err == nil {
		t.Fatal("no error")
	}
	if sc.start != 0 || sc.startSeq != 3 {
		t.Fatalf("start %d seq %d, want 0 and 3", sc.start, sc.startSeq)
	}
}

// serverSink takes what the agent writes to the database.
type serverSink struct {
	net.Conn
	got []byte
}

func (s *serverSink) Write(b []byte) (int, error) { s.got = append(s.got, b...); return len(b), nil }

// A refused LOCAL INFILE request is cut out of the reads, however the rest
// of its response arrives; the database gets an empty file and the client
// the agent's ERR with the request's sequence id, between the responses to
// the commands around it.
func TestScannerRefusesLocalInfile(t *testing.T) {
	caps := wire.ClientProtocol41
	ok := func(seq uint8) []byte { b, _ := wire.AppendPacket(nil, seq, []byte{0, 0, 0, 2, 0, 0, 0}); return b }
	req, _ := wire.AppendPacket(nil, 1, (&wire.LocalInfileRequest{Filename: "f.csv"}).Encode(nil))
	for cut := 1; cut <= len(ok(3))+len(ok(1)); cut++ {
		sess := agent.NewSession(agent.SessionOptions{Recorder: &recorder{}})
		sess.Options.NoMySQLLocalInfile = true
		up := &serverSink{}
		p := &proxy{Relay: agent.Relay{Sess: sess, Server: up}, q: newCmdQueue()}
		p.q.push([]pending{{cmd: wire.ComPing}, {cmd: wire.ComQuery}, {cmd: wire.ComPing}})
		sc := &serverScanner{p: p, dec: wire.NewResponseDecoder(caps)}
		var out []byte
		feed := func(b []byte) {
			t.Helper()
			if err := sc.scan(b); err != nil {
				t.Fatalf("cut %d: %v", cut, err)
			}
			out = append(out, sc.output(b)...)
		}
		feed(append(ok(1), req...))
		if want := []byte{0, 0, 0, 2}; string(up.got) != string(want) {
			t.Fatalf("database got %x, want the empty packet %x", up.got, want)
		}
		rest := append(ok(3), ok(1)...)
		feed(rest[:cut])
		feed(rest[cut:])
		want := append(ok(1), errPacket(1, codeLocalInfileRefused, stateLocalInfileRefused, p.refuseInfile("f.csv"))...)
		want = append(want, ok(1)...)
		if string(out) != string(want) {
			t.Fatalf("cut %d: client got\n%x\nwant\n%x", cut, out, want)
		}
		if sc.completed != 3 {
			t.Fatalf("completed %d", sc.completed)
		}
		sess.Close(nil)
	}
}
