package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func pgConnect(t *testing.T, dsn string) (*pgx.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err == nil {
		t.Cleanup(func() { c.Close(context.Background()) })
	}
	return c, err
}

func TestPostgresCertificateOnly(t *testing.T) {
	pg := PostgresWith(t, PostgresOptions{Users: []string{"alice"}})
	ctx := context.Background()

	// A password is no way in over TCP, even over TLS.
	pg.MustExec(t, "CREATE ROLE pwuser LOGIN PASSWORD 'pw-never-accepted'")
	_, err := pgConnect(t, pg.DSNWithCert("pwuser", "", "")+" password=pw-never-accepted")
	if err == nil || !strings.Contains(err.Error(), "connection requires a valid client certificate") {
		t.Fatalf("password login over TLS: got %v, want refusal for lack of a client certificate", err)
	}
	// Nor is plaintext.
	_, err = pgConnect(t, strings.Replace(pg.DSNWithCert("pwuser", "", ""), "sslmode='verify-full'", "sslmode='disable'", 1)+" password=pw-never-accepted")
	if err == nil || !strings.Contains(err.Error(), "no pg_hba.conf entry") {
		t.Fatalf("plaintext login: got %v, want no pg_hba.conf entry", err)
	}
	// A valid certificate for someone else is not alice's.
	bobCert, bobKey := pg.ClientCert(t, "bob")
	_, err = pgConnect(t, pg.DSNWithCert("alice", bobCert, bobKey))
	if err == nil || !strings.Contains(err.Error(), `certificate authentication failed for user "alice"`) {
		t.Fatalf("alice with bob's certificate: got %v, want certificate authentication failure", err)
	}

	c, err := pgConnect(t, pg.DSN(t, "alice"))
	if err != nil {
		t.Fatalf("alice with her certificate: %v", err)
	}
	if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
		t.Fatalf("connection is %T, want TLS", c.PgConn().Conn())
	}
	var who string
	if err := c.QueryRow(ctx, "select current_user").Scan(&who); err != nil || who != "alice" {
		t.Fatalf("current_user = %q, %v; want alice", who, err)
	}
	multi := "SELECT 1 AS harness_probe,\n\t'two\nlines' AS text"
	if _, err := c.Exec(ctx, multi); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&n); err != nil || n != 42 {
		t.Fatalf("parameterised query: %d, %v", n, err)
	}
	if _, err := c.Exec(ctx, "SELEC broken"); err == nil {
		t.Fatal("syntax error accepted")
	}

	// The real client, as a user would run it.
	psql, ok := findBinary("psql", "/usr/lib/postgresql/15/bin")
	if !ok {
		t.Fatal("psql not found: install postgresql-client")
	}
	cmd := exec.Command(psql, "-X", "-A", "-t", "-c", "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()", pg.DSN(t, "alice"))
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "alice|t" {
		t.Fatalf("psql: %v: %q, want alice|t", err, out)
	}

	entries, err := pg.StatementLogEntries()
	if err != nil {
		t.Fatal(err)
	}
	var sawMulti, sawParam, sawBroken, sawPsql bool
	for _, e := range entries {
		if e.User != "alice" {
			continue
		}
		switch {
		case e.Kind == "statement" && e.Text == multi:
			sawMulti = true
		case e.Kind == "execute" && e.Text == "SELECT $1::int + 1" && e.Parameters == "$1 = '41'":
			sawParam = true
		case e.Kind == "rejected" && e.Text == "SELEC broken" && strings.Contains(e.Error, "syntax error"):
			sawBroken = true
		case e.Kind == "statement" && strings.HasPrefix(e.Text, "select current_user, ssl"):
			sawPsql = true
		}
	}
	if !sawMulti || !sawParam || !sawBroken || !sawPsql {
		t.Fatalf("statement log misses some of alice's statements (multi-line %v, parameterised %v, rejected %v, psql %v):\n%+v",
			sawMulti, sawParam, sawBroken, sawPsql, entries)
	}

	// Restart keeps port and data.
	pg.MustExec(t, "CREATE TABLE kept (x int)")
	oldPid := pg.Pid()
	if err := pg.Restart(); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(oldPid) || pg.Pid() == oldPid {
		t.Fatalf("restart left postmaster %d running", oldPid)
	}
	pg.MustExec(t, "INSERT INTO kept VALUES (1)")

	// Stop leaves nothing behind: not the postmaster, not its group, not
	// the backend of a connection still open.
	live, err := pgConnect(t, pg.DSN(t, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	backend := int(live.PgConn().PID())
	pid := pg.Pid()
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(pid) || ProcessGroupAlive(pid) || ProcessAlive(backend) {
		t.Fatalf("after Stop: postmaster %d alive %v, group alive %v, backend %d alive %v",
			pid, ProcessAlive(pid), ProcessGroupAlive(pid), backend, ProcessAlive(backend))
	}
	if conn, err := net.DialTimeout("tcp", pg.Addr(), time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Stop", pg.Addr())
	}
}

// An outside CA (as Tollgate's db-client CA will be) replaces the test CA:
// its certificates get in, the test CA's do not, and the harness refuses
// to hand out test-CA certificates that could not work.
func TestPostgresOutsideCA(t *testing.T) {
	// A long name makes a long t.TempDir, too long for a Unix socket path.
	t.Run(strings.Repeat("long-test-name-", 6), testPostgresOutsideCA)
}

func testPostgresOutsideCA(t *testing.T) {
	clientCA := NewCA(t, "outside db-client CA")
	serverCA := NewCA(t, "outside server CA")
	server := serverCA.IssueServer(t)
	pg := PostgresWith(t, PostgresOptions{
		TLS:   TLSOptions{ClientCA: clientCA.CertPEM, ServerCert: server.CertPEM, ServerKey: server.KeyPEM, ServerCA: serverCA.CertPEM},
		Users: []string{"carol"},
	})
	if sock := pg.SocketDir + "/.s.PGSQL.65535.lock"; len(sock) >= 108 {
		t.Fatalf("socket path %s is too long for sun_path", sock)
	}
	dir := t.TempDir()
	cert, key := clientCA.IssueClient(t, "carol").Write(t, dir, "carol")
	c, err := pgConnect(t, pg.DSNWithCert("carol", cert, key))
	if err != nil {
		t.Fatalf("carol with the outside CA's certificate: %v", err)
	}
	var who string
	if err := c.QueryRow(context.Background(), "select current_user").Scan(&who); err != nil || who != "carol" {
		t.Fatalf("current_user = %q, %v", who, err)
	}
	cert, key = pg.TestCA.IssueClient(t, "carol").Write(t, dir, "foreign")
	if _, err := pgConnect(t, pg.DSNWithCert("carol", cert, key)); err == nil {
		t.Fatal("a certificate from a CA the server does not trust was accepted")
	}
	if _, err := pg.clients.get("carol"); err == nil || !strings.Contains(err.Error(), "outside client CA") {
		t.Fatalf("test-CA certificate for a server trusting an outside CA: %v", err)
	}
}

func TestTLSOptionsAllOrNothing(t *testing.T) {
	ca := NewCA(t, "ca")
	kp := ca.IssueServer(t)
	_, err := writeServerTLS(t.TempDir(), TLSOptions{ServerCert: kp.CertPEM, ServerKey: kp.KeyPEM})
	if err == nil || !strings.Contains(err.Error(), "ServerCert, ServerKey and ServerCA together") {
		t.Fatalf("server certificate without its CA: %v", err)
	}
}

// TrustTestCA keeps the harness's own client certificates working beside
// an outside client CA: the file the server reads holds both.
func TestTLSOptionsTrustTestCA(t *testing.T) {
	outside := NewCA(t, "outside client CA")
	s, err := writeServerTLS(t.TempDir(), TLSOptions{ClientCA: outside.CertPEM, TrustTestCA: true})
	if err != nil {
		t.Fatal(err)
	}
	if !s.trustsTestCA {
		t.Fatal("the test CA is not trusted")
	}
	b, err := os.ReadFile(s.clientCAFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, outside.CertPEM) || !bytes.Contains(b, s.ca.CertPEM) {
		t.Fatalf("client CA file holds %d bytes, not both CAs", len(b))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("client CA file is not PEM")
	}
}
