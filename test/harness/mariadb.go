package harness

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MariaDBOptions configures a MariaDB server; the zero value is a server
// with a test CA and no extra users.
type MariaDBOptions struct {
	TLS TLSOptions
	// Users are made at start, as by CreateUser.
	Users []string
	// Args are extra mariadbd options, e.g. "--max-connections=20".
	Args []string
}

// MariaDBServer is a MariaDB server run by the harness. Its TCP port, on
// 127.0.0.1 only, requires TLS (require_secure_transport); users made by
// CreateUser also require a client certificate with subject /CN=<user>.
// The harness administers it as root over a Unix socket.
type MariaDBServer struct {
	Dir      string // the server's temporary directory
	DataDir  string
	Socket   string
	Database string // "test": every user made by CreateUser may use it
	// TestCA issued the server certificate unless TLSOptions gave one, and
	// is the client CA unless TLSOptions.ClientCA replaced it (beside it
	// with TLSOptions.TrustTestCA).
	TestCA         *CA
	ClientCAFile   string // ssl-ca: CAs trusted for client certificates
	ServerCertFile string
	ServerKeyFile  string
	ServerCAFile   string // verifies the server certificate
	LogFile        string // general_log: every statement the server received

	bin        string
	args       []string
	port       int
	clients    *clientCerts
	serverPool *x509.CertPool
	stderrFile string

	mu   sync.Mutex
	proc *Process
}

const mariadbPackage = "the Debian package mariadb-server"

// mariadbInnoDB keeps the data directory small and the server quick; it
// is used both to build the data directory and to run the server, which
// must agree on the redo log size.
var mariadbInnoDB = []string{
	"--innodb-log-file-size=8M",
	"--innodb-buffer-pool-size=32M",
	"--innodb-flush-log-at-trx-commit=0",
	"--innodb-doublewrite=0",
	"--innodb-use-native-aio=0", // containers often cap io_setup
}

// MariaDB starts a MariaDB server for this test, stopped when the test
// ends.
func MariaDB(t testing.TB) *MariaDBServer {
	t.Helper()
	return MariaDBWith(t, MariaDBOptions{})
}

// MariaDBWith starts a MariaDB server configured by o for this test.
func MariaDBWith(t testing.TB, o MariaDBOptions) *MariaDBServer {
	t.Helper()
	m, err := startMariaDB(t, o)
	if err != nil {
		t.Fatal(err)
	}
	logOnFailure(t, m.tail)
	return m
}

func findMariaDB(sbin, bin string) (mariadbd, installDB string, err error) {
	mariadbd, ok1 := findBinary("mariadbd", sbin)
	installDB, ok2 := findBinary("mariadb-install-db", bin)
	if !ok1 || !ok2 {
		return "", "", fmt.Errorf("harness: MariaDB server programs mariadbd and mariadb-install-db not found in %s, %s or PATH: install %s", sbin, bin, mariadbPackage)
	}
	return mariadbd, installDB, nil
}

func startMariaDB(t testing.TB, o MariaDBOptions) (*MariaDBServer, error) {
	bin, installDB, err := findMariaDB("/usr/sbin", "/usr/bin")
	if err != nil {
		return nil, err
	}
	dir := t.TempDir()
	m := &MariaDBServer{
		Dir:        dir,
		DataDir:    filepath.Join(dir, "data"),
		Database:   "test",
		LogFile:    filepath.Join(dir, "general.log"),
		bin:        bin,
		args:       o.Args,
		stderrFile: filepath.Join(dir, "mariadbd.err"),
	}
	sockDir, err := shortDir(dir, t.Cleanup)
	if err != nil {
		return nil, err
	}
	m.Socket = filepath.Join(sockDir, "mariadbd.sock")
	tlsFiles, err := writeServerTLS(filepath.Join(dir, "tls"), o.TLS)
	if err != nil {
		return nil, err
	}
	m.TestCA = tlsFiles.ca
	m.clients = newClientCerts(tlsFiles, filepath.Join(dir, "clients"))
	m.ClientCAFile, m.ServerCertFile, m.ServerKeyFile, m.ServerCAFile =
		tlsFiles.clientCAFile, tlsFiles.serverCert, tlsFiles.serverKey, tlsFiles.serverCAFile
	serverCA, err := os.ReadFile(m.ServerCAFile)
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	m.serverPool = x509.NewCertPool()
	if !m.serverPool.AppendCertsFromPEM(serverCA) {
		return nil, errors.New("harness: TLSOptions.ServerCA holds no PEM certificate")
	}
	if err := os.MkdirAll(m.clients.dir, 0o700); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}

	// mariadbd runs as root only when told so; as anyone else it runs as
	// that user and needs no option.
	installArgs := []string{"--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"}
	if os.Geteuid() == 0 {
		installArgs = append(installArgs, "--user=root")
	}
	template, err := dataTemplate(installDB, append(installArgs, mariadbInnoDB...), func(data string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		args := append(append([]string{}, installArgs...), "--datadir="+data)
		return runTool(ctx, "mariadb-install-db", nil, mariadbEnv(), installDB, append(args, mariadbInnoDB...)...)
	})
	if err != nil {
		return nil, err
	}
	if err := copyTree(template, m.DataDir, nil); err != nil {
		return nil, err
	}

	for attempt := 1; ; attempt++ {
		if m.port, err = freePort(); err != nil {
			return nil, err
		}
		err = m.start()
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(err.Error(), "Address already in use") {
			return nil, err
		}
	}
	t.Cleanup(func() {
		if err := m.Stop(); err != nil {
			t.Error(err)
		}
	})

	if err := m.Exec("CREATE DATABASE IF NOT EXISTS " + mysqlIdent(m.Database)); err != nil {
		return nil, err
	}
	for _, u := range o.Users {
		if err := m.createUser(u, "SUBJECT "+mysqlString("/CN="+u)); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func mariadbEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "LANG=C", "TZ=UTC"}
}

func (m *MariaDBServer) start() error {
	args := []string{
		"--no-defaults",
		"--datadir=" + m.DataDir,
		"--tmpdir=" + m.Dir,
		"--pid-file=" + filepath.Join(m.Dir, "mariadbd.pid"),
		"--socket=" + m.Socket,
		"--bind-address=127.0.0.1",
		"--port=" + strconv.Itoa(m.port),
		"--skip-name-resolve",
		"--ssl-cert=" + m.ServerCertFile,
		"--ssl-key=" + m.ServerKeyFile,
		"--ssl-ca=" + m.ClientCAFile,
		"--require-secure-transport=ON",
		"--general-log=1",
		"--general-log-file=" + m.LogFile,
		"--log-output=FILE",
		"--max-connections=50",
		"--lc-messages=en_US",
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	args = append(append(args, mariadbInnoDB...), m.args...)
	proc, err := StartProcess(Command{
		Name:        "mariadbd",
		Path:        m.bin,
		Args:        args,
		Dir:         m.Dir,
		Env:         mariadbEnv(),
		Log:         m.stderrFile,
		StopTimeout: 30 * time.Second,
	})
	if err != nil {
		return err
	}
	err = proc.WaitReady(60*time.Second, func() error {
		db, err := sql.Open("mysql", m.AdminDSN())
		if err != nil {
			return err
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return db.PingContext(ctx)
	})
	if err != nil {
		_ = proc.Stop()
		return err
	}
	m.mu.Lock()
	m.proc = proc
	m.mu.Unlock()
	return nil
}

func (m *MariaDBServer) tail() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return ""
	}
	return m.proc.LogTail(60)
}

// Host is the address the server listens on: 127.0.0.1.
func (m *MariaDBServer) Host() string { return "127.0.0.1" }

// Port is the server's TCP port.
func (m *MariaDBServer) Port() int { return m.port }

// Addr is host:port of the TCP listener.
func (m *MariaDBServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(m.port) }

// Pid is the server's process id (0 before start).
func (m *MariaDBServer) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.Pid()
}

// AdminDSN connects as root (no password) over the Unix socket, which
// require_secure_transport counts as secure.
func (m *MariaDBServer) AdminDSN() string {
	c := mysql.NewConfig()
	c.User = "root"
	c.Net = "unix"
	c.Addr = m.Socket
	c.MultiStatements = true
	return c.FormatDSN()
}

// Exec runs sql as root; it may hold several statements when it has no
// args.
func (m *MariaDBServer) Exec(query string, args ...any) error {
	db, err := sql.Open("mysql", m.AdminDSN())
	if err != nil {
		return fmt.Errorf("harness: mariadb: %w", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("harness: mariadb: %s: %w", query, err)
	}
	return nil
}

// MustExec is Exec that fails the test on error.
func (m *MariaDBServer) MustExec(t testing.TB, query string, args ...any) {
	t.Helper()
	if err := m.Exec(query, args...); err != nil {
		t.Fatal(err)
	}
}

// CreateUser makes name@'%' without password that logs in only with a
// client certificate whose subject is exactly /CN=name (REQUIRE SUBJECT,
// which also demands a certificate the server's CA verifies), with every
// privilege on Database.
func (m *MariaDBServer) CreateUser(t testing.TB, name string) {
	t.Helper()
	if err := m.createUser(name, "SUBJECT "+mysqlString("/CN="+name)); err != nil {
		t.Fatal(err)
	}
}

// CreateUserRequire makes name@'%' like CreateUser with the given CREATE
// USER clauses after the name, e.g. "IDENTIFIED BY 'pw' REQUIRE X509".
func (m *MariaDBServer) CreateUserRequire(t testing.TB, name, clauses string) {
	t.Helper()
	if err := m.createUser(name, clauses); err != nil {
		t.Fatal(err)
	}
}

func (m *MariaDBServer) createUser(name, require string) error {
	if name == "" {
		return errors.New("harness: mariadb user name is empty")
	}
	if strings.HasPrefix(require, "SUBJECT ") {
		require = "REQUIRE " + require
	}
	account := mysqlString(name) + "@'%'"
	return m.Exec("CREATE USER " + account + " " + require + "; GRANT ALL ON " + mysqlIdent(m.Database) + ".* TO " + account)
}

func mysqlString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}

func mysqlIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// ClientCert returns a test-CA client certificate with subject /CN=user,
// issued on first use, as files and as a key pair. It fails the test when
// the server trusts an outside client CA instead of the test CA.
func (m *MariaDBServer) ClientCert(t testing.TB, user string) (certFile, keyFile string, pair *KeyPair) {
	t.Helper()
	c, err := m.clients.get(user)
	if err != nil {
		t.Fatal(err)
	}
	return c.certFile, c.keyFile, c.pair
}

// TLSConfig verifies the server (ServerCAFile, name 127.0.0.1) and
// presents cert when it is not nil.
func (m *MariaDBServer) TLSConfig(cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: m.serverPool, ServerName: m.Host(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// ConfigWithCert is a go-sql-driver/mysql configuration for user over TCP
// with TLS and the given client certificate (nil: none), using Database.
// Open it with mysql.NewConnector and sql.OpenDB, or set Passwd first.
func (m *MariaDBServer) ConfigWithCert(user string, cert *tls.Certificate) *mysql.Config {
	c := mysql.NewConfig()
	c.User = user
	c.Net = "tcp"
	c.Addr = m.Addr()
	c.DBName = m.Database
	c.TLS = m.TLSConfig(cert)
	return c
}

// Config is ConfigWithCert with a test-CA certificate for user.
func (m *MariaDBServer) Config(t testing.TB, user string) *mysql.Config {
	t.Helper()
	_, _, pair := m.ClientCert(t, user)
	cert := pair.TLSCertificate()
	return m.ConfigWithCert(user, &cert)
}

var mysqlTLSNames atomic.Int64

// DSN is a go-sql-driver/mysql DSN for user with a test-CA certificate: its
// TLS configuration is registered under a fresh name for the life of the
// test.
func (m *MariaDBServer) DSN(t testing.TB, user string) string {
	t.Helper()
	c := m.Config(t, user)
	name := fmt.Sprintf("tollgate-harness-%d", mysqlTLSNames.Add(1))
	if err := mysql.RegisterTLSConfig(name, c.TLS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mysql.DeregisterTLSConfig(name) })
	c.TLS, c.TLSConfig = nil, name
	return c.FormatDSN()
}

// Stop shuts the server down cleanly (SIGTERM, then kill) and waits until
// it has exited. Stopping a stopped server does nothing.
func (m *MariaDBServer) Stop() error {
	m.mu.Lock()
	proc := m.proc
	m.mu.Unlock()
	if proc == nil {
		return nil
	}
	return proc.Stop()
}

// Restart stops the server and starts it again on the same port and data.
func (m *MariaDBServer) Restart() error {
	if err := m.Stop(); err != nil {
		return err
	}
	return m.start()
}

// MariaDBLogEntry is one record of the general log.
type MariaDBLogEntry struct {
	Thread int64 // connection id
	// Command is the protocol command: Connect, Query, Prepare, Execute,
	// Close stmt, Quit, Init DB, ...
	Command string
	// User is user@host from the thread's Connect record; empty when that
	// record is not in the log.
	User     string
	Argument string // the statement text for Query, Prepare and Execute
}

// GeneralLog returns the statement text of every Query, Prepare and
// Execute record, in order (a prepared statement appears when prepared and
// again, with its parameters filled in, when executed).
func (m *MariaDBServer) GeneralLog() ([]string, error) {
	entries, err := m.GeneralLogEntries()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		switch e.Command {
		case "Query", "Prepare", "Execute":
			out = append(out, e.Argument)
		}
	}
	return out, nil
}

// GeneralLogEntries returns every record of the general log, including
// the harness's own administration as root. The server writes a record
// before it runs the command, so a statement whose result the client has
// seen is in the log.
func (m *MariaDBServer) GeneralLogEntries() ([]MariaDBLogEntry, error) {
	f, err := os.Open(m.LogFile)
	if err != nil {
		return nil, fmt.Errorf("harness: general log: %w", err)
	}
	defer f.Close()
	return parseGeneralLog(f)
}

// A general log record is "YYMMDD HH:MM:SS\t" (or "\t\t" when the second
// has not changed), the thread id right-aligned, a space, the command, a
// tab and the argument. An argument's own newlines are written as they
// are, so a line that does not start a record continues the one before.
var mariadbRecord = regexp.MustCompile(`^(?:\d{6} [ \d]\d:\d\d:\d\d\t|\t\t)\s*(\d+) (` + strings.Join(mariadbCommands, "|") + `)\t(.*)$`)

// mariadbCommands are the server's names of protocol commands
// (command_name in sql_parse.cc). Matching only these keeps a continuation
// line that happens to start with a tab and a number from passing for a
// record.
var mariadbCommands = []string{
	"Sleep", "Quit", "Init DB", "Query", "Field List", "Create DB", "Drop DB", "Refresh",
	"Shutdown", "Statistics", "Processlist", "Connect", "Kill", "Debug", "Ping", "Time",
	"Delayed insert", "Change user", "Binlog Dump", "Table Dump", "Connect Out",
	"Register Slave", "Prepare", "Execute", "Long Data", "Close stmt", "Reset stmt",
	"Set option", "Fetch", "Daemon", "Unimpl get tid", "Reset connection", "Bulk_execute",
	"Slave_worker", "Slave_IO", "Slave_SQL",
}

func parseGeneralLog(r io.Reader) ([]MariaDBLogEntry, error) {
	var out []MariaDBLogEntry
	var more [][]string // continuation lines of each entry, joined at the end
	users := map[int64]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 64*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		rec := mariadbRecord.FindStringSubmatch(line)
		if rec == nil {
			if len(out) > 0 && !strings.HasPrefix(line, "Time\t") && !mariadbHeader(line) {
				more[len(out)-1] = append(more[len(out)-1], line)
			}
			continue
		}
		thread, err := strconv.ParseInt(rec[1], 10, 64)
		if err != nil {
			continue
		}
		e := MariaDBLogEntry{Thread: thread, Command: rec[2], Argument: rec[3]}
		if e.Command == "Connect" {
			if u, _, ok := strings.Cut(e.Argument, " on "); ok && strings.Contains(u, "@") {
				users[thread] = u
			}
		}
		e.User = users[thread]
		out = append(out, e)
		more = append(more, nil)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("harness: read general log: %w", err)
	}
	for i, lines := range more {
		if len(lines) > 0 {
			out[i].Argument = strings.Join(append([]string{out[i].Argument}, lines...), "\n")
		}
	}
	return out, nil
}

// mariadbHeader matches the lines the server writes when it opens the log.
func mariadbHeader(line string) bool {
	return strings.Contains(line, ", Version: ") && strings.Contains(line, "started with:") ||
		strings.HasPrefix(line, "Tcp port: ")
}
