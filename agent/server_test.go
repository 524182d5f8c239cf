package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
)

// echoEngine reports what the server handed it.
type echoEngine struct{ got chan *ClientConn }

func (e *echoEngine) Serve(_ context.Context, c *ClientConn) error {
	e.got <- c
	return nil
}

type serverFixture struct {
	addr   string
	eng    *echoEngine
	cas    *ca.Authorities
	hostCA *x509.CertPool
}

func newServerFixture(t *testing.T, dbs ...string) *serverFixture {
	t.Helper()
	cas, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hc, _, err := cas.IssueHost(key.Public(), "agent", []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	users, _ := cas.Pool(ca.User)
	hosts, _ := cas.Pool(ca.Host)
	var cfgs []config.Database
	for _, n := range dbs {
		cfgs = append(cfgs, config.Database{Name: n, Protocol: "postgres", URI: "127.0.0.1:1"})
	}
	eng := &echoEngine{got: make(chan *ClientConn, 1)}
	srv, err := NewServer(ServerConfig{
		Cluster: "c", Databases: cfgs,
		TLS:      &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{hc.Raw}, PrivateKey: key}}},
		UserCAs:  users,
		Identify: identity.FromCertificate,
		Authorize: func(identity.Identity, DatabaseInfo, string, string) Decision {
			return Decision{}
		},
		Recorder:   &fakeRecorder{},
		ClientCert: func(context.Context, DatabaseInfo, string) (*tls.Certificate, error) { return nil, nil },
		Engines:    map[string]Engine{"postgres": eng},
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return &serverFixture{addr: ln.Addr().String(), eng: eng, cas: cas, hostCA: hosts}
}

func (f *serverFixture) userCert(t *testing.T, ttl time.Duration) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, _, err := f.cas.IssueUser(key.Public(), identity.Identity{User: "alice", Roles: []string{"dev"}}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key}
}

func (f *serverFixture) dial(t *testing.T, sni string, certs ...tls.Certificate) *ClientConn {
	t.Helper()
	c, err := tls.Dial("tcp", f.addr, &tls.Config{ServerName: sni, RootCAs: f.hostCA, Certificates: certs,
		VerifyConnection: func(tls.ConnectionState) error { return nil }, InsecureSkipVerify: sni != "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case cc := <-f.eng.got:
		return cc
	case <-time.After(5 * time.Second):
		t.Fatal("engine not called")
	}
	return nil
}

func TestServerRoutesBySNI(t *testing.T) {
	f := newServerFixture(t, "orders", "billing")
	cert := f.userCert(t, time.Hour)
	cc := f.dial(t, "billing", cert)
	if cc.Reject != nil || cc.Database.Config.Name != "billing" || cc.Identity.User != "alice" {
		t.Fatalf("conn %+v", cc)
	}
	if cc := f.dial(t, "orders.db.example.com", cert); cc.Reject != nil || cc.Database.Config.Name != "orders" {
		t.Fatalf("first label: %+v", cc)
	}
	if cc := f.dial(t, "nope", cert); cc.Reject == nil || !strings.Contains(cc.Reject.Error(), `unknown database "nope"`) {
		t.Fatalf("unknown: %v", cc.Reject)
	}
}

func TestServerRejectsBadCertificates(t *testing.T) {
	f := newServerFixture(t, "orders")
	if cc := f.dial(t, "orders"); cc.Reject == nil || !strings.Contains(cc.Reject.Error(), "no client certificate") {
		t.Fatalf("no cert: %v", cc.Reject)
	}
	expired := f.userCert(t, time.Nanosecond)
	if cc := f.dial(t, "orders", expired); cc.Reject == nil || !strings.Contains(cc.Reject.Error(), "expired at") {
		t.Fatalf("expired: %v", cc.Reject)
	}
	// A certificate from another CA.
	other, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, _, _ := other.IssueUser(key.Public(), identity.Identity{User: "mallory", Roles: []string{"dev"}}, time.Hour)
	cc := f.dial(t, "orders", tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key})
	if cc.Reject == nil || !strings.Contains(cc.Reject.Error(), "not trusted") || cc.Identity.User != "" {
		t.Fatalf("foreign: %v %+v", cc.Reject, cc.Identity)
	}
}

func TestServerNoSNIWithOneDatabase(t *testing.T) {
	f := newServerFixture(t, "only")
	if cc := f.dial(t, "", f.userCert(t, time.Hour)); cc.Reject != nil || cc.Database.Config.Name != "only" {
		t.Fatalf("%+v", cc)
	}
}
