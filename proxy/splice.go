package proxy

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/events"
)

// Splicing a client's connection onto an agent: bytes only, in both
// directions, with buffers sized for idle sessions and for bursts.

// splice opens a stream to the agent, sends the preamble naming the
// client at clientAddr, and copies bytes both ways until both sides are
// done.
func (s *Server) splice(c net.Conn, clientAddr string, t *agentTunnel, db, sni string, log *slog.Logger) {
	st, err := t.sess.OpenStream()
	if err != nil {
		log.Info("proxy: agent tunnel cannot open a stream", "database", db, "host_id", t.hostID, "err", err)
		s.reject(c, events.RejectUnknownDB, sni, fmt.Errorf("database %s is offline: the agent's tunnel failed: %v", db, err))
		c.Close()
		return
	}
	if err := tunnel.WritePreamble(st, tunnel.Preamble{ClientAddr: clientAddr, ServerName: sni}); err != nil {
		st.Close()
		c.Close()
		return
	}
	forget, ok := s.track(c)
	if !ok {
		st.Close()
		c.Close()
		return
	}
	defer forget()
	Splice(c, st)
}

// Splice copies a to b and b to a until both directions ended, passing
// each end of stream on as a half close, then closes both.
func Splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	one := func(dst, src net.Conn) {
		err := copyIdleLight(dst, src)
		if err != nil {
			// A broken side ends both directions at once.
			a.Close()
			b.Close()
		} else if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go one(b, a)
	go one(a, b)
	<-done
	<-done
	a.Close()
	b.Close()
}

// Sizes of the splice buffers: an idle session waits in a Read with a
// small one; a read that fills it takes a large one from the pool until a
// read comes back with what the small one would have held (the burst is
// over). Each idle session then holds 2 x 2 KiB rather than 2 x 32 KiB.
// A read that is merely short of the large buffer does not end the burst:
// a yamux stream returns what arrived so far, often less than 32 KiB in
// the middle of a COPY, and going back to 2 KiB reads there doubled the
// reads and writes (and, with Shrink, yamux's allocations) of the rest.
const (
	smallCopy = 2 << 10
	largeCopy = 32 << 10
)

var largeBufs = sync.Pool{New: func() any { b := make([]byte, largeCopy); return &b }}

// copyIdleLight copies src to dst until src ends (nil) or either side
// fails.
func copyIdleLight(dst, src net.Conn) error {
	small := make([]byte, smallCopy)
	buf := small
	var pooled *[]byte
	defer func() {
		if pooled != nil {
			largeBufs.Put(pooled)
		}
	}()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		switch {
		case n == len(buf) && pooled == nil:
			pooled = largeBufs.Get().(*[]byte)
			buf = *pooled
		case n <= smallCopy && pooled != nil:
			largeBufs.Put(pooled)
			pooled, buf = nil, small
			// A yamux stream keeps the buffer a burst grew; it is empty
			// now and need not be held while the session idles.
			if st, ok := src.(interface{ Shrink() }); ok {
				st.Shrink()
			}
		}
	}
}
