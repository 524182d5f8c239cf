package compat

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/test/harness"
)

// dbUser is the database account both paths log in as: directly with a
// harness certificate, through the agent with a db-client certificate the
// agent gets for it.
const dbUser = "app"

// authority is Tollgate's side of a world: its CAs, alice's user
// certificate, the agent's host certificate.
type authority struct {
	cas      *ca.Authorities
	user     tls.Certificate
	host     tls.Certificate
	hostPool *x509.CertPool
}

func newAuthority(t *testing.T, names ...string) *authority {
	t.Helper()
	cas, err := ca.Open(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	hostKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hostCert, _, err := cas.IssueHost(hostKey.Public(), "agent", names, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	userKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	userCert, _, err := cas.IssueUser(userKey.Public(), identity.Identity{User: "alice", Roles: []string{"dev"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := cas.Pool(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	return &authority{cas: cas, hostPool: pool,
		user: tls.Certificate{Certificate: [][]byte{userCert.Raw}, PrivateKey: userKey, Leaf: userCert},
		host: tls.Certificate{Certificate: [][]byte{hostCert.Raw}, PrivateKey: hostKey}}
}

// dbTLS is what the database is given: Tollgate's db-client CA for the
// agent, and the harness's test CA kept for the direct client.
func (a *authority) dbTLS(t *testing.T) harness.TLSOptions {
	t.Helper()
	pem, err := a.cas.CertPEM(ca.DBClient)
	if err != nil {
		t.Fatal(err)
	}
	return harness.TLSOptions{ClientCA: pem, TrustTestCA: true}
}

// clientTLS is alice's side of TLS to the agent.
func (a *authority) clientTLS(sni string) *tls.Config {
	return &tls.Config{RootCAs: a.hostPool, ServerName: sni, Certificates: []tls.Certificate{a.user}}
}

const roleYAML = `
kind: role
metadata: {name: dev}
spec:
  allow:
    db_labels: {env: compat}
    db_users: [app]
    db_names: ["*"]
`

// serveAgent runs an agent for db in strict audit mode, as deployed, with
// a real JetStream behind it: gating on every statement is part of what a
// client goes through. listen wraps the agent's listeners (the MySQL
// engine adds its own port); it returns their addresses.
func (a *authority) serveAgent(t *testing.T, db config.Database, engine agent.Engine, extra func(*agent.Server, agent.Recorder, net.Listener) net.Listener) (string, string) {
	t.Helper()
	ns := harness.NATS(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(js, "compat", events.WithAckTimeout(5*time.Second), events.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	roles, err := access.Parse([]byte(roleYAML))
	if err != nil {
		t.Fatal(err)
	}
	userPool, err := a.cas.Pool(ca.User)
	if err != nil {
		t.Fatal(err)
	}
	db.AuditMode = "strict"
	db.StaticLabels = map[string]string{"env": "compat"}
	srv, err := agent.NewServer(agent.ServerConfig{
		Cluster:   "compat",
		Databases: []config.Database{db},
		TLS:       &tls.Config{Certificates: []tls.Certificate{a.host}},
		UserCAs:   userPool,
		Identify:  identity.FromCertificate,
		Authorize: agent.RoleAuthorizer(func([]string) []access.Role { return roles }),
		Recorder:  pub,
		ClientCert: agent.CachedClientCerts(func(pub crypto.PublicKey, u string, ttl time.Duration) (*x509.Certificate, []byte, error) {
			return a.cas.IssueDBClient(pub, u, ttl)
		}, time.Hour),
		Engines: map[string]agent.Engine{db.Protocol: engine},
		Logger:  quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lns := []net.Listener{ln}
	var second string
	if extra != nil {
		ln2, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		second = ln2.Addr().String()
		lns = append(lns, extra(srv, pub, ln2))
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ctx, lns...); err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = pub.Close(context.Background())
	})
	return ln.Addr().String(), second
}

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
