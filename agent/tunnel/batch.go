package tunnel

import (
	"net"
	"sync"
)

// maxPending bounds what a batchConn holds unwritten: past it, Write waits
// for the connection, as it would without the batching.
const maxPending = 256 << 10

// BatchConn gives the writes made to c to a goroutine of their own, which
// writes everything that accumulated while its previous write was in the
// kernel in one call. yamux writes each frame from one send loop and
// waits for the write before taking the next frame; on a tunnel carrying
// many sessions the frames of the others queue meanwhile, each then costs
// a TLS record and a system call of its own, and so does each read of
// them at the other end. Batched, a busy tunnel sends several frames per
// record. Its Write returns once the bytes are queued; an error of the
// connection is returned by the next Write, and ends the connection.
func BatchConn(c net.Conn) net.Conn {
	b := &batchConn{Conn: c}
	b.cond = sync.NewCond(&b.mu)
	go b.flush()
	return b
}

type batchConn struct {
	net.Conn
	mu     sync.Mutex
	cond   *sync.Cond
	buf    []byte // queued, not yet given to the connection
	spare  []byte // the buffer of the write in progress, reused
	err    error
	closed bool
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && !c.closed && len(c.buf) >= maxPending {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.closed {
		return 0, net.ErrClosed
	}
	c.buf = append(c.buf, p...)
	c.cond.Broadcast()
	return len(p), nil
}

func (c *batchConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(c.buf) == 0 && !c.closed {
			c.cond.Wait()
		}
		if len(c.buf) == 0 {
			return
		}
		b := c.buf
		c.buf = c.spare[:0]
		c.mu.Unlock()
		_, err := c.Conn.Write(b)
		c.mu.Lock()
		if cap(b) <= 2*maxPending {
			c.spare = b[:0]
		}
		if err != nil {
			c.err = err
			c.cond.Broadcast()
			_ = c.Conn.Close()
			return
		}
		c.cond.Broadcast()
	}
}

// Close ends the connection; what is still queued is dropped, as a
// closed connection drops what the kernel has not sent.
func (c *batchConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.buf = nil
	c.cond.Broadcast()
	c.mu.Unlock()
	return c.Conn.Close()
}
