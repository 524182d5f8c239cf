package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// BatchConn delivers every write, in order, whatever the batching; an
// error of the connection is returned by a later Write; Close ends it.
func TestBatchConn(t *testing.T) {
	a, b := net.Pipe()
	c := BatchConn(a)
	var want bytes.Buffer
	got := make(chan []byte)
	go func() {
		all, _ := io.ReadAll(io.LimitReader(b, 3*maxPending+1000))
		got <- all
	}()
	// More than maxPending in all, so that Write also waits for the
	// connection at times.
	for i := range 1000 {
		p := bytes.Repeat([]byte{byte(i)}, 1+i*3*maxPending/1000/500)
		want.Write(p)
		if n, err := c.Write(p); n != len(p) || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	rest := 3*maxPending + 1000 - want.Len()
	if rest < 0 {
		t.Fatalf("the test wrote %d bytes, more than it reads", want.Len())
	}
	tail := bytes.Repeat([]byte{'x'}, rest)
	want.Write(tail)
	if _, err := c.Write(tail); err != nil {
		t.Fatal(err)
	}
	if all := <-got; !bytes.Equal(all, want.Bytes()) {
		t.Fatalf("read %d bytes, not the %d written in order", len(all), want.Len())
	}

	// The reader is gone: the flusher's write fails, and so does a
	// Write after it.
	b.Close()
	var err error
	// The flusher finds out on its own time: wait for it.
	for i := 0; i < 10000 && err == nil; i++ {
		_, err = c.Write([]byte("after"))
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes to a connection whose peer is gone kept succeeding")
	}
	if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("close: %v", err)
	}
	if _, err := c.Write([]byte("closed")); err == nil {
		t.Fatal("a write after Close succeeded")
	}
}
