package agent

import (
	"bufio"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// A client connection set to reset is reset when closed, through the
// wrappers the server puts around it; the peer's next write fails.
func TestResetOnClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cc := &ClientConn{Conn: &prefixConn{Conn: raw, r: bufio.NewReader(raw)}}
	cc.ResetOnClose()
	if err := cc.Close(); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = peer.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("peer read after the reset: %v, want ECONNRESET", err)
	}
}
