package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/test/harness"
)

// `tollgate start` with the proxy on proxy.listen and an agent that only
// tunnels to it (db_service.proxy_addrs, no db_service.listen): a client
// reaches PostgreSQL through the proxy's port.
func TestStartAgentThroughProxyTunnel(t *testing.T) {
	dataDir := t.TempDir()
	// The CAs are made first so that PostgreSQL trusts the cluster's
	// db-client CA; the broker opens the same ones.
	cas, err := ca.Open(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, clientCA, err := cas.IssueDBServer([]string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dbCA, _ := cas.CertPEM(ca.DB)
	pg := harness.PostgresWith(t, harness.PostgresOptions{
		TLS:   harness.TLSOptions{ClientCA: clientCA, ServerCert: certPEM, ServerKey: keyPEM, ServerCA: dbCA},
		Users: []string{"app"},
	})
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	cfg, err := config.Parse([]byte(`
cluster_name: ci
nats:
  embedded: {listen: "-", store_dir: ` + filepath.Join(dataDir, "nats") + `}
proxy:
  listen: ` + proxyAddr + `
db_service:
  proxy_addrs: [` + proxyAddr + `]
  databases:
    - name: pg1
      protocol: postgres
      uri: ` + pg.Addr() + `
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = dataDir
	if a := startListenAddrs(cfg); len(a) != 1 || a[0].key != "proxy.listen" {
		t.Fatalf("listen addresses %+v, want proxy.listen alone", a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runStart(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := identity.Identity{User: "alice", Roles: []string{"access"},
		Traits: map[string][]string{identity.TraitDBUsers: {"app"}, identity.TraitDBNames: {"postgres"}}}
	cert, _, err := cas.IssueUser(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := cas.Pool(ca.Host)
	tc := &tls.Config{ServerName: "pg1", RootCAs: roots,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}}
	pc, err := pgx.ParseConfig("host=127.0.0.1 port=1 sslmode=disable dbname=postgres user=app")
	if err != nil {
		t.Fatal(err)
	}
	pc.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
		d := tls.Dialer{Config: tc}
		return d.DialContext(ctx, "tcp", proxyAddr)
	}
	// The agent's tunnel comes up after the broker: until then the proxy
	// refuses pg1 (registered, no agent connected).
	var conn *pgx.Conn
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err = pgx.ConnectConfig(cctx, pc)
		ccancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session through the proxy within 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer conn.Close(context.Background())
	var who string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&who); err != nil || who != "app" {
		t.Fatalf("through the proxy: %q, %v", who, err)
	}
}
