package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/test/harness"
)

// startRelay puts a relay in front of a harness PostgreSQL and returns a
// libpq connection string to it for user.
func startRelay(tb testing.TB, pg *harness.PostgresServer, user string) string {
	tb.Helper()
	relayCA := harness.NewCA(tb, "relay test CA")
	serverPair := relayCA.IssueServer(tb, "127.0.0.1")
	certFile, keyFile := pg.ClientCert(tb, user)
	clientCert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		tb.Fatal(err)
	}
	caPEM, err := os.ReadFile(pg.ServerCAFile)
	if err != nil {
		tb.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	r := &Relay{
		ClientTLS:   &tls.Config{Certificates: []tls.Certificate{serverPair.TLSCertificate()}},
		Upstream:    pg.Addr(),
		UpstreamTLS: &tls.Config{RootCAs: roots, ServerName: pg.Host(), Certificates: []tls.Certificate{clientCert}},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()
	tb.Cleanup(func() { cancel(); <-done })
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	return fmt.Sprintf("host=%s port=%s user=%s dbname=postgres sslmode=require gssencmode=disable", host, port, user)
}

func TestRelayCarriesPsql(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatal("psql not found: install postgresql-client-15")
	}
	pg := harness.PostgresWith(t, harness.PostgresOptions{Users: []string{"bench"}})
	conn := startRelay(t, pg, "bench")
	out, err := exec.Command("psql", conn, "-X", "-At", "-c", "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "bench|t" {
		t.Fatalf("psql through the relay: %v\n%s", err, out)
	}
}
