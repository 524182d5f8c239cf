package postgres_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/postgres"
	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/test/harness"
)

// stack is a real PostgreSQL trusting Tollgate's db-client CA, an embedded
// JetStream, the publisher, and an agent in front of the database.
type stack struct {
	pg      *harness.PostgresServer
	nats    *harness.NATSServer
	js      jetstream.JetStream
	cas     *ca.Authorities
	addr    string
	dir     string
	hostCA  string // file that verifies the agent's certificate
	userCrt string // alice's user certificate and key, for psql
	userKey string
	user    tls.Certificate
}

func newStack(t *testing.T, mode string) *stack {
	t.Helper()
	dir := t.TempDir()
	cas, err := ca.Open(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	clientCA, err := cas.CertPEM(ca.DBClient)
	if err != nil {
		t.Fatal(err)
	}
	pg := harness.PostgresWith(t, harness.PostgresOptions{TLS: harness.TLSOptions{ClientCA: clientCA}, Users: []string{"app"}})
	pg.MustExec(t, "create table accounts (id int primary key, owner text, balance numeric(12,2), opened timestamptz, tag uuid, blob bytea)")
	pg.MustExec(t, "grant all on accounts to app")

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
	pub, err := events.NewPublisher(js, "test", events.WithAckTimeout(time.Second), events.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}

	hostKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hostCert, _, err := cas.IssueHost(hostKey.Public(), "agent", []string{"localhost", "pg1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	userKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	userCert, _, err := cas.IssueUser(userKey.Public(), identity.Identity{User: "alice", Roles: []string{"dev"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{pg: pg, nats: ns, js: js, cas: cas, dir: dir,
		user: tls.Certificate{Certificate: [][]byte{userCert.Raw}, PrivateKey: userKey, Leaf: userCert}}
	hostPEM, _ := cas.CertPEM(ca.Host)
	s.hostCA = writeFile(t, dir, "host-ca.crt", hostPEM)
	s.userCrt = writeFile(t, dir, "alice.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: userCert.Raw}))
	kb, _ := x509.MarshalPKCS8PrivateKey(userKey)
	s.userKey = writeFile(t, dir, "alice.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))

	roles, err := access.Parse([]byte(`
kind: role
metadata: {name: dev}
spec:
  allow:
    db_labels: {env: test}
    db_users: [app]
    db_names: ["*"]
`))
	if err != nil {
		t.Fatal(err)
	}
	userPool, _ := cas.Pool(ca.User)
	srv, err := agent.NewServer(agent.ServerConfig{
		Cluster: "test",
		Databases: []config.Database{{Name: "pg1", Protocol: "postgres", URI: pg.Addr(), AuditMode: mode,
			StaticLabels: map[string]string{"env": "test"},
			TLS:          config.DatabaseTLS{Mode: "verify-full", CACertFile: pg.ServerCAFile}}},
		TLS:       &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{hostCert.Raw}, PrivateKey: hostKey}}},
		UserCAs:   userPool,
		Identify:  identity.FromCertificate,
		Authorize: agent.RoleAuthorizer(func([]string) []access.Role { return roles }),
		Recorder:  pub,
		ClientCert: agent.CachedClientCerts(func(pub crypto.PublicKey, u string, ttl time.Duration) (*x509.Certificate, []byte, error) {
			return cas.IssueDBClient(pub, u, ttl)
		}, time.Hour),
		Engines: map[string]agent.Engine{"postgres": postgres.New(postgres.Options{Logger: quiet()})},
		Logger:  quiet(),
		// Refusals counted in a window are stored when it ends: short here.
		RejectWindow: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = pub.Close(context.Background())
	})
	return s
}

func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// psqlArgs connects psql to the agent directly (SSLRequest, then TLS).
func (s *stack) psqlConn(dbUser string) string {
	host, port, _ := net.SplitHostPort(s.addr)
	return fmt.Sprintf("host=%s port=%s user=%s dbname=postgres sslmode=verify-ca sslrootcert=%s sslcert=%s sslkey=%s gssencmode=disable",
		host, port, dbUser, s.hostCA, s.userCrt, s.userKey)
}

func tlsConfig(roots *x509.CertPool, sni string, cert tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: roots, ServerName: sni, Certificates: []tls.Certificate{cert}}
}

// waitAudit polls the stream until cond holds on it.
func (s *stack) waitAudit(t *testing.T, what string, cond func([]map[string]any) bool) []map[string]any {
	t.Helper()
	return agenttest.WaitAudit(t, s.js, what, cond)
}

// The helpers every engine's end-to-end tests share.
var (
	ofType       = agenttest.OfType
	count        = agenttest.Count
	checkGapless = agenttest.CheckGapless
	writeFile    = agenttest.WriteFile
)
