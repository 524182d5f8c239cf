package bench

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// inUse is the live heap and the goroutine stacks of this process. Two
// collections: the first only moves sync.Pool contents (the COPY runs'
// large buffers) to the pools' victim caches, the second frees them.
// HeapAlloc rather than HeapInuse, which counts whole spans and so
// fragmentation left by earlier runs.
func inUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc + m.StackInuse)
}

// idleSessions opens n sessions to the strict agent directly, measures
// the memory they hold, closes them, and does the same through the proxy
// and the tunneled agent. Each session completes its TLS handshake (the
// agent has verified the user certificate and routed the SNI) and then
// stays idle; the agent waits for its startup message.
func (s *stack) idleSessions(t *testing.T, n int) IdleResult {
	t.Helper()
	direct := s.conns[TargetStrict]
	// No SNI directly (an IP address): the agent serves its one database.
	directTLS := &tls.Config{ServerName: direct.Host, RootCAs: s.hostRoots, Certificates: []tls.Certificate{s.userPair}}
	via := s.conns[TargetStrictViaProxy]
	viaTLS := &tls.Config{ServerName: via.Host, RootCAs: s.hostRoots, Certificates: []tls.Certificate{s.userPair}}
	res := IdleResult{Sessions: n}
	res.Direct = s.holdIdle(t, n, net.JoinHostPort(direct.Host, direct.Port), directTLS)
	res.ViaProxy = s.holdIdle(t, n, net.JoinHostPort(via.HostAddr, via.Port), viaTLS)
	t.Logf("%d idle sessions: %.1f KiB/session directly, %.1f KiB/session through the proxy and one tunnel (%.1f KiB added)",
		n, res.DirectPerSession()/1024, res.ViaProxyPerSession()/1024, res.ProxyPerSession()/1024)
	return res
}

// holdIdle opens n TLS sessions to addr, returns the memory they added
// once the far side settled, and closes them. Every session must still
// be open when measured, or the figure would be of fewer sessions.
func (s *stack) holdIdle(t *testing.T, n int, addr string, cfg *tls.Config) int64 {
	t.Helper()
	before := settledInUse()
	conns := make([]*tls.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	for range n {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			t.Fatalf("idle session %d to %s: %v", len(conns)+1, addr, err)
		}
		conns = append(conns, c)
	}
	// TLS 1.3: the client is done before the agent has read its
	// certificate; the agent's side settles a moment later.
	time.Sleep(time.Second)
	after := inUse()
	// The agent gives a client StartupTimeout (30 s) for its startup
	// message: sessions opened too slowly would already be closed.
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		var b [1]byte
		if _, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("idle session %d to %s ended before it was measured (%s after the first opened): %v", i+1, addr, time.Since(start).Round(time.Millisecond), err)
		}
	}
	if after <= before {
		t.Fatalf("%d idle sessions to %s added no memory (%d bytes before, %d after)", n, addr, before, after)
	}
	return after - before
}

// settledInUse is inUse once it stopped moving: the embedded NATS server
// and the publishers shrink their buffers some time after a busy run,
// which would otherwise be subtracted from the sessions' memory.
func settledInUse() int64 {
	last := inUse()
	for range 20 {
		time.Sleep(250 * time.Millisecond)
		now := inUse()
		if d := now - last; d < 64<<10 && d > -64<<10 {
			return now
		}
		last = now
	}
	return last
}
