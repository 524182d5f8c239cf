package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/proxy"
)

// A database registered with no agent behind any proxy: the proxy answers
// the ClientHello with its offline alert, and tg gives psql and mariadb
// their own protocol's error with the reason, rather than a TLS error.
func TestOfflineDatabaseInTheClientsProtocol(t *testing.T) {
	for _, bin := range []string{"psql", "mariadb"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: install postgresql-client-15 and mariadb-client", bin)
		}
	}
	cas, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
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
		Registered: func(n string) (string, bool) { return "gone", n == "pg1" || n == "my1" }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- px.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _, err := cas.IssueUser(key.Public(), identity.Identity{User: "alice", Roles: []string{"access"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id := &identity.File{ProxyAddr: ln.Addr().String(), CAs: hosts,
		Cert: tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}}
	run := func(protocol, db string, client ...string) string {
		t.Helper()
		local, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tn := newTunnel(local, ln.Addr().String(), protocol, db, id)
		tctx, stop := context.WithCancel(ctx)
		served := make(chan error, 1)
		go func() { served <- tn.Serve(tctx) }()
		defer func() { stop(); <-served }()
		_, port, _ := net.SplitHostPort(tn.Addr())
		for i, a := range client {
			client[i] = strings.ReplaceAll(a, "PORT", port)
		}
		out, err := exec.CommandContext(ctx, client[0], client[1:]...).CombinedOutput()
		if err == nil {
			t.Fatalf("%s reached an offline database: %s", client[0], out)
		}
		return string(out)
	}
	out := run("postgres", "pg1", "psql", "host=127.0.0.1 port=PORT sslmode=disable user=app dbname=postgres connect_timeout=10", "-Xc", "select 1")
	if !strings.Contains(out, "FATAL:  database pg1 is offline: no agent connected") {
		t.Fatalf("psql said: %s", out)
	}
	t.Logf("psql: %s", strings.TrimSpace(out))
	out = run("mysql", "my1", "mariadb", "--host=127.0.0.1", "--port=PORT", "--skip-ssl", "--user=app", "--connect-timeout=10", "-e", "select 1")
	if !strings.Contains(out, "ERROR 1105") || !strings.Contains(out, "database my1 is offline: no agent connected") {
		t.Fatalf("mariadb said: %s", out)
	}
	t.Logf("mariadb: %s", strings.TrimSpace(out))
}
