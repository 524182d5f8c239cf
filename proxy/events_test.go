package proxy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/proxy"
)

// An agent reaches the event plane through the proxy's port with its host
// certificate: the proxy connects it to the NATS server as the agent part,
// so it may publish audit events and not write STATE; a client without a
// host certificate gets no connection.
func TestEventPlaneThroughTheProxy(t *testing.T) {
	dir := t.TempDir()
	cas, err := ca.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := natsserver.LoadOrCreateCredentials(filepath.Join(dir, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(dir, "js"), Auth: creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := daemon.HostCertificate(cas, ca.ProxyHostID, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	hosts, _ := cas.Pool(ca.Host)
	px, err := proxy.New(proxy.Options{Listener: ln, Cert: cert, AgentCAs: hosts,
		Events: &proxy.EventPlane{Dial: ns.InProcessConn,
			Sign: ns.Sign}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- px.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _, err := cas.IssueHost(key.Public(), "agent-e", []string{"pg1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: hosts, Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}}}
	var dials atomic.Int32
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	errs := make(chan error, 8)
	nc, err := natsserver.ConnectViaProxy([]string{ln.Addr().String()}, tc, dial, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		errs <- err
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if dials.Load() == 0 {
		t.Fatal("the dial function given was not used")
	}
	if err := nc.Publish("audit.test.frame.x", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatalf("the agent's connection through the proxy: %v", err)
	}
	// STATE is the broker's: the server refuses the agent.
	if err := nc.Publish("state.users.mallory", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	_ = nc.FlushTimeout(5 * time.Second)
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), "Permissions Violation") {
			t.Fatalf("publishing to STATE as the agent: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the agent published to STATE through the proxy without a permissions violation")
	}
	// Without a host certificate the proxy opens nothing.
	tc2 := &tls.Config{RootCAs: hosts}
	if c, err := natsserver.ConnectViaProxy([]string{ln.Addr().String()}, tc2, nil, nats.MaxReconnects(0), nats.Timeout(3*time.Second)); err == nil {
		c.Close()
		t.Fatal("an event-plane connection without a host certificate")
	}
}
