package mysql

import (
	"testing"

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
