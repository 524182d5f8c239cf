package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/proxy"
)

// A proxy without the broker (Upstream, no Handoff) splices what it does
// not route to the broker's port unread: the client's TLS ends at the
// broker (its certificate, not the proxy's), and a PostgreSQL client's
// SSLRequest, answered by the proxy, is asked again of the broker, whose
// 'S' the client does not see twice.
func TestUpstreamGetsWhatTheProxyDoesNotRoute(t *testing.T) {
	cas, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	proxyCert, err := daemon.HostCertificate(cas, ca.ProxyHostID, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	brokerCert, err := daemon.HostCertificate(cas, ca.ProxyHostID, []string{"127.0.0.1", "broker.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	sslRequests := make(chan bool, 4)
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				first, err := r.Peek(1)
				if err != nil {
					return
				}
				sawSSL := first[0] == 0
				if sawSSL {
					msg := make([]byte, 8)
					if _, err := io.ReadFull(r, msg); err != nil || string(msg) != "\x00\x00\x00\x08\x04\xd2\x16\x2f" {
						return
					}
					if _, err := c.Write([]byte{'S'}); err != nil {
						return
					}
				}
				sslRequests <- sawSSL
				tc := tls.Server(&bufConn{Conn: c, r: r}, &tls.Config{Certificates: []tls.Certificate{brokerCert}})
				if err := tc.Handshake(); err != nil {
					return
				}
				_, _ = io.WriteString(tc, "from the broker")
			}()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := cas.Pool(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	px, err := proxy.New(proxy.Options{Listener: ln, Cert: proxyCert, AgentCAs: hosts, Log: quiet(),
		Upstream: func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", up.Addr().String())
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- px.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	brokerLeaf := brokerCert.Leaf
	roots := x509.NewCertPool()
	hostCA, _ := cas.Cert(ca.Host)
	roots.AddCert(hostCA)
	read := func(t *testing.T, raw net.Conn, sni string, alpn ...string) {
		t.Helper()
		_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
		c := tls.Client(raw, &tls.Config{ServerName: sni, RootCAs: roots, NextProtos: alpn})
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "from the broker" {
			t.Fatalf("through the proxy: %q, %v", b, err)
		}
		if got := c.ConnectionState().PeerCertificates[0]; !got.Equal(brokerLeaf) {
			t.Fatalf("the client's TLS ended at %v, not at the broker", got.DNSNames)
		}
	}

	t.Run("API", func(t *testing.T) {
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		read(t, raw, "broker.example.test")
		if <-sslRequests {
			t.Fatal("the broker was sent an SSLRequest for a TLS client")
		}
	})
	t.Run("an agent's event plane", func(t *testing.T) {
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		// Not relayed here (no Events): the broker's proxy checks the
		// agent's certificate.
		read(t, raw, "broker.example.test", natsserver.ProxyALPN)
		if <-sslRequests {
			t.Fatal("the broker was sent an SSLRequest for a TLS client")
		}
	})
	t.Run("PostgreSQL SSLRequest", func(t *testing.T) {
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		if _, err := raw.Write([]byte("\x00\x00\x00\x08\x04\xd2\x16\x2f")); err != nil {
			t.Fatal(err)
		}
		var s [1]byte
		if _, err := io.ReadFull(raw, s[:]); err != nil || s[0] != 'S' {
			t.Fatalf("SSLRequest answered %q, %v", s, err)
		}
		// A database this proxy routes nowhere: the broker decides.
		read(t, raw, "broker.example.test")
		if !<-sslRequests {
			t.Fatal("the broker was not asked for TLS first")
		}
	})
}

// bufConn reads through r, which may hold bytes already read from Conn.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
