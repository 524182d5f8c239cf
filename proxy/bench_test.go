package proxy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/proxy"
)

// startBenchProxy is a proxy with nothing behind its handoff.
func startBenchProxy(tb testing.TB, cas *ca.Authorities, registered ...func(string) (string, bool)) *proxy.Server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := daemon.HostCertificate(cas, "proxy", []string{"localhost", "127.0.0.1"})
	if err != nil {
		tb.Fatal(err)
	}
	hosts, _ := cas.Pool(ca.Host)
	o := proxy.Options{Listener: ln, Cert: cert, AgentCAs: hosts}
	if len(registered) > 0 {
		o.Registered = registered[0]
	}
	px, err := proxy.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- px.Serve(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	return px
}

// listenTunnel opens an agent's tunnel to addr with cert.
func listenTunnel(tb testing.TB, cas *ca.Authorities, addr, hostID string, dbs []string, cert tls.Certificate) *tunnel.Listener {
	tb.Helper()
	roots, _ := cas.Pool(ca.Host)
	tl, err := tunnel.Listen(tunnel.Options{Addrs: []string{addr}, HostID: hostID, Databases: dbs,
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots}, Log: quiet()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tl.Close() })
	return tl
}

// sink serves TLS on ln as a database would: it reads the 8-byte count
// that opens each connection, then that many bytes, and answers one byte.
func sink(ln net.Listener, cert tls.Certificate) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
			var n [8]byte
			if _, err := io.ReadFull(tc, n[:]); err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, tc, int64(binary.BigEndian.Uint64(n[:]))); err != nil {
				return
			}
			_, _ = tc.Write([]byte{1})
		}()
	}
}

// BenchmarkSplice sends bytes over end-to-end TLS to a sink, directly and
// through the proxy and an agent's tunnel: the proxy's cost per byte is
// the splice and yamux's framing, the TLS being the same on both paths.
func BenchmarkSplice(b *testing.B) {
	cas, err := ca.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _, err := cas.IssueHost(key.Public(), "agent-bench", []string{"bench"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	agentCert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	roots, _ := cas.Pool(ca.Host)
	client := &tls.Config{ServerName: "bench", RootCAs: roots}

	direct, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	go sink(direct, agentCert)

	px := startBenchProxy(b, cas)
	tl := listenTunnel(b, cas, px.Addr().String(), "agent-bench", []string{"bench"}, agentCert)
	go sink(tl, agentCert)
	for deadline := time.Now().Add(10 * time.Second); len(px.Databases()["bench"]) == 0; {
		if time.Now().After(deadline) {
			b.Fatal("no tunnel")
		}
		time.Sleep(10 * time.Millisecond)
	}

	const chunk = 256 << 10
	run := func(b *testing.B, addr string) {
		c, err := tls.Dial("tcp", addr, client)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, chunk)
		b.SetBytes(chunk)
		b.ResetTimer()
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(b.N)*chunk)
		if _, err := c.Write(n[:]); err != nil {
			b.Fatal(err)
		}
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := io.ReadFull(c, n[:1]); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, direct.Addr().String()) })
	b.Run("proxy+tunnel", func(b *testing.B) { run(b, px.Addr().String()) })
}

// sourceSink serves TLS on ln as a database answering a COPY TO STDOUT
// would: it reads the 8-byte count that opens each connection and sends
// that many bytes.
func sourceSink(ln net.Listener, cert tls.Certificate) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
			var n [8]byte
			if _, err := io.ReadFull(tc, n[:]); err != nil {
				return
			}
			buf := make([]byte, 64<<10)
			for left := int64(binary.BigEndian.Uint64(n[:])); left > 0; {
				k := min(left, int64(len(buf)))
				if _, err := tc.Write(buf[:k]); err != nil {
					return
				}
				left -= k
			}
		}()
	}
}

// BenchmarkSpliceOut is BenchmarkSplice the other way: bytes from the
// sink to the client, as a COPY TO STDOUT sends them.
func BenchmarkSpliceOut(b *testing.B) {
	cas, err := ca.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _, err := cas.IssueHost(key.Public(), "agent-bench", []string{"bench"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	agentCert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	roots, _ := cas.Pool(ca.Host)
	client := &tls.Config{ServerName: "bench", RootCAs: roots}
	direct, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	go sourceSink(direct, agentCert)
	px := startBenchProxy(b, cas)
	tl := listenTunnel(b, cas, px.Addr().String(), "agent-bench", []string{"bench"}, agentCert)
	go sourceSink(tl, agentCert)
	for deadline := time.Now().Add(10 * time.Second); len(px.Databases()["bench"]) == 0; {
		if time.Now().After(deadline) {
			b.Fatal("no tunnel")
		}
		time.Sleep(10 * time.Millisecond)
	}
	const chunk = 256 << 10
	run := func(b *testing.B, addr string) {
		c, err := tls.Dial("tcp", addr, client)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.SetBytes(chunk)
		b.ResetTimer()
		cpu0 := processCPU()
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(b.N)*chunk)
		if _, err := c.Write(n[:]); err != nil {
			b.Fatal(err)
		}
		if got, err := io.Copy(io.Discard, io.LimitReader(c, int64(b.N)*chunk)); err != nil || got != int64(b.N)*chunk {
			b.Fatalf("%d bytes, %v", got, err)
		}
		b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N*chunk)*(1<<20)/1e3, "cpu-µs/MiB")
	}
	b.Run("direct", func(b *testing.B) { run(b, direct.Addr().String()) })
	b.Run("proxy+tunnel", func(b *testing.B) { run(b, px.Addr().String()) })
}

// idleSink completes the TLS handshake of each connection and then waits
// for it to end, as an agent holds an idle session.
func idleSink(ln net.Listener, cert tls.Certificate) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
			_, _ = io.Copy(io.Discard, tc)
		}()
	}
}

// BenchmarkIdleSessions opens 1,000 idle TLS sessions directly and through
// the proxy and one tunnel, and reports the memory (heap and stacks of the
// whole process: clients, proxy and agent side) each session adds; the
// difference between the two is what the proxy and the tunnel cost.
func BenchmarkIdleSessions(b *testing.B) {
	cas, err := ca.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _, err := cas.IssueHost(key.Public(), "agent-bench", []string{"bench"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	agentCert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	roots, _ := cas.Pool(ca.Host)
	client := &tls.Config{ServerName: "bench", RootCAs: roots}
	direct, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	go idleSink(direct, agentCert)
	px := startBenchProxy(b, cas)
	tl := listenTunnel(b, cas, px.Addr().String(), "agent-bench", []string{"bench"}, agentCert)
	go idleSink(tl, agentCert)
	for deadline := time.Now().Add(10 * time.Second); len(px.Databases()["bench"]) == 0; {
		if time.Now().After(deadline) {
			b.Fatal("no tunnel")
		}
		time.Sleep(10 * time.Millisecond)
	}
	const sessions = 1000
	inUse := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse + m.StackInuse
	}
	run := func(b *testing.B, addr string) {
		for range b.N {
			before := inUse()
			conns := make([]*tls.Conn, 0, sessions)
			for range sessions {
				c, err := tls.Dial("tcp", addr, client)
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, c)
			}
			time.Sleep(200 * time.Millisecond) // the far side's handshakes done
			after := inUse()
			b.ReportMetric(float64(after-before)/sessions, "B/session")
			for _, c := range conns {
				c.Close()
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, direct.Addr().String()) })
	b.Run("proxy+tunnel", func(b *testing.B) { run(b, px.Addr().String()) })
}

// echoSink serves TLS on ln as a database answering queries would: each
// message is a 4-byte length and that many bytes, answered with a message
// of twice the length.
func echoSink(ln net.Listener, cert tls.Certificate) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
			var buf []byte
			for {
				var n [4]byte
				if _, err := io.ReadFull(tc, n[:]); err != nil {
					return
				}
				l := int(binary.BigEndian.Uint32(n[:]))
				buf = append(buf[:0], make([]byte, 4+l)...)
				if _, err := io.ReadFull(tc, buf[4:]); err != nil {
					return
				}
				ans := append(buf, buf[4:]...)
				binary.BigEndian.PutUint32(ans, uint32(2*l))
				if _, err := tc.Write(ans); err != nil {
					return
				}
			}
		}()
	}
}

// processCPU is the user and system time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRoundTrip sends small requests over end-to-end TLS to an echo
// sink and waits for each answer, as pgbench -S does, directly and
// through the proxy and an agent's tunnel, with 1 and 8 clients at once.
// cpu-µs/op is the CPU time of the whole process (clients, proxy, tunnel
// and sink) per round trip, which depends less on the machine's other
// load than ns/op: the difference between the two paths is what the
// proxy and the tunnel cost per round trip.
func BenchmarkRoundTrip(b *testing.B) {
	cas, err := ca.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _, err := cas.IssueHost(key.Public(), "agent-bench", []string{"bench"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	agentCert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	roots, _ := cas.Pool(ca.Host)
	client := &tls.Config{ServerName: "bench", RootCAs: roots}
	direct, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	go echoSink(direct, agentCert)
	px := startBenchProxy(b, cas)
	tl := listenTunnel(b, cas, px.Addr().String(), "agent-bench", []string{"bench"}, agentCert)
	go echoSink(tl, agentCert)
	for deadline := time.Now().Add(10 * time.Second); len(px.Databases()["bench"]) == 0; {
		if time.Now().After(deadline) {
			b.Fatal("no tunnel")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// About a pgbench -S exchange: a Bind/Execute of some 100 bytes
	// answered with some 200.
	const size = 100
	run := func(b *testing.B, addr string, clients int) {
		conns := make([]*tls.Conn, clients)
		for i := range conns {
			c, err := tls.Dial("tcp", addr, client)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			conns[i] = c
		}
		var next atomic.Int64
		b.ResetTimer()
		cpu0 := processCPU()
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for _, c := range conns {
			wg.Go(func() {
				msg := make([]byte, 4+size)
				binary.BigEndian.PutUint32(msg, size)
				ans := make([]byte, 4+2*size)
				for next.Add(1) <= int64(b.N) {
					if _, err := c.Write(msg); err != nil {
						errs <- err
						return
					}
					if _, err := io.ReadFull(c, ans); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		cpu := processCPU() - cpu0
		b.StopTimer()
		select {
		case err := <-errs:
			b.Fatal(err)
		default:
		}
		b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
	}
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("direct/c%d", clients), func(b *testing.B) { run(b, direct.Addr().String(), clients) })
		b.Run(fmt.Sprintf("proxy+tunnel/c%d", clients), func(b *testing.B) { run(b, px.Addr().String(), clients) })
	}
}
