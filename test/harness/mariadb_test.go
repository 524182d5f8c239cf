package harness

import (
	"context"
	"database/sql"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

func mysqlOpen(t *testing.T, c *mysql.Config) *sql.DB {
	t.Helper()
	conn, err := mysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })
	return db
}

func TestMariaDBCertificateOnly(t *testing.T) {
	m := MariaDBWith(t, MariaDBOptions{Users: []string{"alice"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A user with a password and REQUIRE X509: the right password over TLS
	// without a certificate is refused.
	m.CreateUserRequire(t, "pwuser", "IDENTIFIED BY 'pw-never-enough' REQUIRE X509")
	c := m.ConfigWithCert("pwuser", nil)
	c.Passwd = "pw-never-enough"
	err := mysqlOpen(t, c).PingContext(ctx)
	if err == nil || !strings.Contains(err.Error(), "Access denied for user 'pwuser'") {
		t.Fatalf("password over TLS without certificate: got %v, want access denied", err)
	}
	// alice without a certificate, and with bob's, is refused.
	if err := mysqlOpen(t, m.ConfigWithCert("alice", nil)).PingContext(ctx); err == nil || !strings.Contains(err.Error(), "Access denied for user 'alice'") {
		t.Fatalf("alice without certificate: got %v, want access denied", err)
	}
	_, _, bob := m.ClientCert(t, "bob")
	bobCert := bob.TLSCertificate()
	if err := mysqlOpen(t, m.ConfigWithCert("alice", &bobCert)).PingContext(ctx); err == nil || !strings.Contains(err.Error(), "Access denied for user 'alice'") {
		t.Fatalf("alice with bob's certificate: got %v, want access denied", err)
	}
	// Plaintext is refused by require_secure_transport (MariaDB reports it
	// as access denied), even for a user that requires nothing and whose
	// password is right: the same login over TLS gets in.
	m.CreateUserRequire(t, "plainuser", "IDENTIFIED BY 'pw'")
	plain := m.ConfigWithCert("plainuser", nil)
	plain.Passwd = "pw"
	plain.TLS = nil
	if err := mysqlOpen(t, plain).PingContext(ctx); err == nil || !strings.Contains(err.Error(), "Access denied for user 'plainuser'") {
		t.Fatalf("plaintext login: got %v, want access denied", err)
	}
	plain.TLS = m.TLSConfig(nil)
	if err := mysqlOpen(t, plain).PingContext(ctx); err != nil {
		t.Fatalf("the same login over TLS: %v", err)
	}

	db := mysqlOpen(t, m.Config(t, "alice"))
	var who, cipher string
	if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&who); err != nil || who != "alice@%" {
		t.Fatalf("CURRENT_USER() = %q, %v; want alice@%%", who, err)
	}
	var name string
	if err := db.QueryRowContext(ctx, "SHOW STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil || cipher == "" {
		t.Fatalf("Ssl_cipher = %q, %v; want a TLS session", cipher, err)
	}
	multi := "SELECT 1 AS harness_probe,\n  'two\n\tlines' AS text"
	if _, err := db.ExecContext(ctx, multi); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT ? + 1", 41).Scan(&n); err != nil || n != 42 {
		t.Fatalf("prepared statement: %d, %v", n, err)
	}
	// The registered-DSN form works too.
	db2, err := sql.Open("mysql", m.DSN(t, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if err := db2.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&who); err != nil || who != "alice@%" {
		t.Fatalf("via DSN: CURRENT_USER() = %q, %v", who, err)
	}

	// The real client, with certificate and CA files.
	cli, ok := findBinary("mariadb", "/usr/bin")
	if !ok {
		t.Fatal("mariadb client not found: install the Debian package mariadb-client")
	}
	certFile, keyFile, _ := m.ClientCert(t, "alice")
	cmd := exec.Command(cli, "--no-defaults", "-h", m.Host(), "-P", strconv.Itoa(m.Port()), "-u", "alice",
		"--ssl-ca="+m.ServerCAFile, "--ssl-cert="+certFile, "--ssl-key="+keyFile, "--ssl-verify-server-cert",
		"-N", "-B", "-e", "SELECT CURRENT_USER(), 'from the cli'", m.Database)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "alice@%\tfrom the cli" {
		t.Fatalf("mariadb cli: %v: %q", err, out)
	}

	entries, err := m.GeneralLogEntries()
	if err != nil {
		t.Fatal(err)
	}
	var sawMulti, sawPrepare, sawExecute, sawCLI bool
	for _, e := range entries {
		if !strings.HasPrefix(e.User, "alice@") {
			continue
		}
		switch {
		case e.Command == "Query" && e.Argument == multi:
			sawMulti = true
		case e.Command == "Prepare" && e.Argument == "SELECT ? + 1":
			sawPrepare = true
		case e.Command == "Execute" && e.Argument == "SELECT 41 + 1":
			sawExecute = true
		case e.Command == "Query" && e.Argument == "SELECT CURRENT_USER(), 'from the cli'":
			sawCLI = true
		}
	}
	if !sawMulti || !sawPrepare || !sawExecute || !sawCLI {
		t.Fatalf("general log misses some of alice's statements (multi-line %v, prepare %v, execute %v, cli %v):\n%+v",
			sawMulti, sawPrepare, sawExecute, sawCLI, entries)
	}
	queries, err := m.GeneralLog()
	if err != nil || !slices.Contains(queries, multi) {
		t.Fatalf("GeneralLog() lacks the multi-line query: %v, %q", err, queries)
	}

	// Restart keeps port and data; Stop leaves no process and no listener.
	m.MustExec(t, "CREATE TABLE test.kept (x int)")
	oldPid := m.Pid()
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(oldPid) {
		t.Fatalf("restart left mariadbd %d running", oldPid)
	}
	m.MustExec(t, "INSERT INTO test.kept VALUES (1)")
	pid := m.Pid()
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(pid) || ProcessGroupAlive(pid) {
		t.Fatalf("mariadbd %d still alive after Stop", pid)
	}
	if conn, err := net.DialTimeout("tcp", m.Addr(), time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Stop", m.Addr())
	}
}

// An outside CA (as Tollgate's db-client CA will be) replaces the test CA:
// its certificates get in, the test CA's do not.
func TestMariaDBOutsideCA(t *testing.T) {
	// A long name makes a long t.TempDir, too long for a Unix socket path.
	t.Run(strings.Repeat("long-test-name-", 6), testMariaDBOutsideCA)
}

func testMariaDBOutsideCA(t *testing.T) {
	clientCA := NewCA(t, "outside db-client CA")
	serverCA := NewCA(t, "outside server CA")
	server := serverCA.IssueServer(t)
	m := MariaDBWith(t, MariaDBOptions{
		TLS:   TLSOptions{ClientCA: clientCA.CertPEM, ServerCert: server.CertPEM, ServerKey: server.KeyPEM, ServerCA: serverCA.CertPEM},
		Users: []string{"carol"},
	})
	if len(m.Socket) >= 108 {
		t.Fatalf("socket path %s is too long for sun_path", m.Socket)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	good := clientCA.IssueClient(t, "carol").TLSCertificate()
	var who string
	if err := mysqlOpen(t, m.ConfigWithCert("carol", &good)).QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&who); err != nil || who != "carol@%" {
		t.Fatalf("carol with the outside CA's certificate: %q, %v", who, err)
	}
	foreign := m.TestCA.IssueClient(t, "carol").TLSCertificate()
	if err := mysqlOpen(t, m.ConfigWithCert("carol", &foreign)).PingContext(ctx); err == nil {
		t.Fatal("a certificate from a CA the server does not trust was accepted")
	}

}
