package tunnel_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/proxy"
	"github.com/tollgate-db/tollgate/test/harness"
)

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func connected(l *tunnel.Listener) string {
	var addrs []string
	for a := range l.Connected() {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	return strings.Join(addrs, " ")
}

// Learn: a proxy presence names gets a tunnel; the same proxy under
// another address (its id already acknowledged) does not get a second;
// a proxy presence no longer names loses its tunnel, a configured one
// never does.
func TestLearnProxies(t *testing.T) {
	cas, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ns := harness.NATS(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := presence.Ensure(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	hosts, _ := cas.Pool(ca.Host)
	start := func(id string) *proxy.Server {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cert, err := daemon.HostCertificate(cas, ca.ProxyHostID, []string{"127.0.0.1", "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		px, err := proxy.New(proxy.Options{Listener: ln, Cert: cert, AgentCAs: hosts,
			Presence: presence.NewAnnouncer(kv, id, ln.Addr().String(), 0, nil)})
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = px.Serve(ctx) }()
		return px
	}
	a, b := start("proxy-a"), start("proxy-b")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _, err := cas.IssueHost(key.Public(), "agent-l", []string{"pg1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := tunnel.Listen(tunnel.Options{Addrs: []string{a.Addr().String()}, HostID: "agent-l", Databases: []string{"pg1"},
		TLS: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}}, RootCAs: hosts}})
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	waitFor(t, "the configured tunnel", func() bool { return connected(tl) == a.Addr().String() })

	_, port, _ := net.SplitHostPort(a.Addr().String())
	tl.Learn([]tunnel.Peer{{ID: "proxy-a", Addr: "localhost:" + port}, {ID: "proxy-b", Addr: b.Addr().String()}})
	want := []string{a.Addr().String(), b.Addr().String()}
	sort.Strings(want)
	waitFor(t, "a tunnel to the learned proxy", func() bool { return len(b.Databases()["pg1"]) == 1 })
	time.Sleep(300 * time.Millisecond)
	if got := connected(tl); got != strings.Join(want, " ") || len(a.Databases()["pg1"]) != 1 {
		t.Fatalf("tunnels to %q (proxy-a routes %v), want %q", got, a.Databases()["pg1"], want)
	}

	// The proxy drops its routes when the stream ends, which can be just
	// before the listener has let go of its end: both are waited for.
	tl.Learn(nil)
	waitFor(t, "the learned tunnel closed on both ends", func() bool {
		return len(b.Databases()["pg1"]) == 0 && connected(tl) == a.Addr().String()
	})
}
