package tunnel

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

type writesConn struct {
	net.Conn
	writes [][]byte
}

func (w *writesConn) Write(p []byte) (int, error) {
	w.writes = append(w.writes, bytes.Clone(p))
	return len(p), nil
}

func frameHeader(typ byte, length uint32) []byte {
	h := make([]byte, frameHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

func TestCoalesceConn(t *testing.T) {
	w := &writesConn{}
	c := CoalesceConn(w)
	// A window update and an empty data frame (a FIN) go out at once.
	for _, h := range [][]byte{frameHeader(1, 1<<20), frameHeader(frameTypeData, 0)} {
		if n, err := c.Write(h); n != len(h) || err != nil || len(w.writes) == 0 || !bytes.Equal(w.writes[len(w.writes)-1], h) {
			t.Fatalf("header %x: %d %v, writes %x", h, n, err, w.writes)
		}
	}
	w.writes = nil
	// A data frame's header waits for its body and goes with it.
	h := frameHeader(frameTypeData, 5)
	if n, err := c.Write(h); n != len(h) || err != nil || len(w.writes) != 0 {
		t.Fatalf("held header: %d %v, writes %x", n, err, w.writes)
	}
	if n, err := c.Write([]byte("hello")); n != 5 || err != nil || len(w.writes) != 1 || !bytes.Equal(w.writes[0], append(h, "hello"...)) {
		t.Fatalf("body: %d %v, writes %x", n, err, w.writes)
	}
}
