package tunnel_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/proxy"
)

func TestPreambleRoundTrip(t *testing.T) {
	var b bytes.Buffer
	if err := tunnel.WritePreamble(&b, tunnel.Preamble{ClientAddr: "10.0.0.1:5432", ServerName: "pg1"}); err != nil {
		t.Fatal(err)
	}
	b.WriteString("rest")
	p, err := tunnel.ReadPreamble(&b)
	if err != nil || p.ClientAddr != "10.0.0.1:5432" || p.ServerName != "pg1" || b.String() != "rest" {
		t.Fatalf("%+v %v, left %q", p, err, b.String())
	}
	for _, bad := range [][]byte{{0}, {0xff, 0xff}, {0, 2, '{', '}'}, {0, 1, 'x'}} {
		if _, err := tunnel.ReadPreamble(bytes.NewReader(bad)); err == nil {
			t.Errorf("preamble %q accepted", bad)
		}
	}
}

func TestEgressProxyFromEnvironment(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://egress.example:3128")
	t.Setenv("NO_PROXY", "inside.example")
	u, err := tunnel.EgressProxy("tollgate.example:3080")
	if err != nil || u == nil || u.Host != "egress.example:3128" {
		t.Fatalf("got %v, %v", u, err)
	}
	if u, err := tunnel.EgressProxy("inside.example:3080"); err != nil || u != nil {
		t.Fatalf("NO_PROXY: got %v, %v", u, err)
	}
}

// connectProxy is an HTTP proxy that answers CONNECT only, as an egress
// proxy does, requiring the credentials alice:secret.
type connectProxy struct{ connects atomic.Int32 }

func (p *connectProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
		return
	}
	if u, pw, ok := parseProxyAuth(r); !ok || u != "alice" || pw != "secret" {
		http.Error(w, "who are you", http.StatusProxyAuthRequired)
		return
	}
	up, err := net.Dial("tcp", r.Host)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	p.connects.Add(1)
	c, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		up.Close()
		return
	}
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
}

func parseProxyAuth(r *http.Request) (string, string, bool) {
	r2 := &http.Request{Header: http.Header{"Authorization": r.Header["Proxy-Authorization"]}}
	return r2.BasicAuth()
}

// An agent whose only way out is an HTTP egress proxy keeps its tunnel
// through it, and a client reaches the agent through the Tollgate proxy.
func TestTunnelThroughEgressProxy(t *testing.T) {
	cas, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pcert, err := daemon.HostCertificate(cas, "proxy", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	hosts, _ := cas.Pool(ca.Host)
	px, err := proxy.New(proxy.Options{Listener: ln, Cert: pcert, AgentCAs: hosts})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = px.Serve(ctx) }()

	egress := &connectProxy{}
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	es := &http.Server{Handler: egress}
	go func() { _ = es.Serve(eln) }()
	defer es.Close()

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _, err := cas.IssueHost(key.Public(), "agent-nat", []string{"pg1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	agentCert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	via := &url.URL{Scheme: "http", Host: eln.Addr().String(), User: url.UserPassword("alice", "secret")}
	var d net.Dialer
	tl, err := tunnel.Listen(tunnel.Options{Addrs: []string{ln.Addr().String()}, HostID: "agent-nat", Databases: []string{"pg1"},
		TLS: &tls.Config{Certificates: []tls.Certificate{agentCert}, RootCAs: hosts},
		Dial: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return tunnel.DialVia(ctx, d.DialContext, via, addr)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	// The agent's side: TLS with its certificate, echoing one line back
	// with the client's address the preamble carried.
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{agentCert}})
				buf := make([]byte, 5)
				if _, err := io.ReadFull(tc, buf); err != nil {
					return
				}
				_, _ = io.WriteString(tc, string(buf)+" from "+c.RemoteAddr().String())
				_ = tc.CloseWrite()
				_, _ = io.Copy(io.Discard, tc)
			}()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(px.Databases()["pg1"]) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no tunnel through the egress proxy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if egress.connects.Load() != 1 {
		t.Fatalf("%d CONNECTs", egress.connects.Load())
	}
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "pg1", RootCAs: hosts})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello from " + c.LocalAddr().String(); string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}

	// Wrong credentials: the egress proxy refuses and the agent says so.
	bad := *via
	bad.User = url.UserPassword("alice", "wrong")
	if _, err := tunnel.DialVia(ctx, d.DialContext, &bad, ln.Addr().String()); err == nil {
		t.Fatal("CONNECT with wrong credentials succeeded")
	}
}
