package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresOptions configures a PostgreSQL server; the zero value is a
// server with a test CA and no extra users.
type PostgresOptions struct {
	TLS TLSOptions
	// Users are login roles made at start, as by CreateUser.
	Users []string
	// Settings are extra postgresql.conf settings; values are written as
	// quoted strings, which PostgreSQL accepts for every type.
	Settings map[string]string
}

// PostgresServer is a PostgreSQL server run by the harness. Its TCP port,
// on 127.0.0.1 only, accepts nothing but TLS with a client certificate
// whose common name is the user (pg_hba "hostssl ... cert"); the harness
// administers it as Superuser over a Unix socket in SocketDir.
type PostgresServer struct {
	Dir       string // the server's temporary directory
	DataDir   string
	SocketDir string
	Superuser string // "postgres"
	// TestCA issued the server certificate unless TLSOptions gave one, and
	// is the client CA unless TLSOptions.ClientCA replaced it (beside it
	// with TLSOptions.TrustTestCA).
	TestCA         *CA
	ClientCAFile   string // ssl_ca_file: CAs trusted for client certificates
	ServerCertFile string
	ServerKeyFile  string
	ServerCAFile   string // verifies the server certificate (sslrootcert)
	LogFile        string // the server's log (logging collector): statements and errors

	bin        pgBinaries
	account    *SystemUser
	port       int
	settings   map[string]string
	clients    *clientCerts
	stderrFile string

	mu   sync.Mutex
	proc *Process
}

type pgBinaries struct{ initdb, postgres string }

const pgPackage = "postgresql-15 (Debian package postgresql)"

func findPostgres() (pgBinaries, error) {
	dirs := []string{"/usr/lib/postgresql/15/bin"}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	return findPostgresIn(dirs)
}

func findPostgresIn(dirs []string) (pgBinaries, error) {
	initdb, ok1 := findBinary("initdb", dirs...)
	postgres, ok2 := findBinary("postgres", dirs...)
	if !ok1 || !ok2 {
		return pgBinaries{}, fmt.Errorf("harness: PostgreSQL server programs initdb and postgres not found in %s or PATH: install %s",
			strings.Join(dirs, ", "), pgPackage)
	}
	return pgBinaries{initdb: initdb, postgres: postgres}, nil
}

// Postgres starts a PostgreSQL server for this test, stopped when the test
// ends.
func Postgres(t testing.TB) *PostgresServer {
	t.Helper()
	return PostgresWith(t, PostgresOptions{})
}

// PostgresWith starts a PostgreSQL server configured by o for this test.
func PostgresWith(t testing.TB, o PostgresOptions) *PostgresServer {
	t.Helper()
	p, err := startPostgres(t, o)
	if err != nil {
		t.Fatal(err)
	}
	logOnFailure(t, p.tail)
	return p
}

func startPostgres(t testing.TB, o PostgresOptions) (*PostgresServer, error) {
	bin, err := findPostgres()
	if err != nil {
		return nil, err
	}
	account, err := serverAccount("postgres")
	if err != nil {
		return nil, err
	}
	dir := t.TempDir()
	p := &PostgresServer{
		Dir:        dir,
		DataDir:    filepath.Join(dir, "data"),
		Superuser:  "postgres",
		LogFile:    filepath.Join(dir, "log", "postgresql.log"),
		bin:        bin,
		account:    account,
		settings:   o.Settings,
		stderrFile: filepath.Join(dir, "postgres.stderr"),
	}
	if p.SocketDir, err = shortDir(filepath.Join(dir, "sock"), t.Cleanup); err != nil {
		return nil, err
	}
	tlsFiles, err := writeServerTLS(filepath.Join(dir, "tls"), o.TLS)
	if err != nil {
		return nil, err
	}
	p.TestCA = tlsFiles.ca
	p.clients = newClientCerts(tlsFiles, filepath.Join(dir, "clients"))
	p.ClientCAFile, p.ServerCertFile, p.ServerKeyFile, p.ServerCAFile =
		tlsFiles.clientCAFile, tlsFiles.serverCert, tlsFiles.serverKey, tlsFiles.serverCAFile
	for _, d := range []string{p.SocketDir, filepath.Dir(p.LogFile), p.clients.dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("harness: %w", err)
		}
	}
	// The server reads its key only when it owns it (or root owns it with
	// a group the server is in); it writes data, socket and log.
	if err := errors.Join(
		openPath(account, dir),
		chownAll(account, p.SocketDir, filepath.Dir(p.LogFile), p.ServerKeyFile),
	); err != nil {
		return nil, err
	}
	initdbArgs := []string{"-U", p.Superuser, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C", "--no-instructions"}
	template, err := dataTemplate(bin.initdb, initdbArgs, func(data string) error {
		if err := os.Mkdir(data, 0o700); err != nil {
			return fmt.Errorf("harness: %w", err)
		}
		if err := chownAll(account, data); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return runTool(ctx, "initdb", account, pgEnv(), bin.initdb, append([]string{"-D", data}, initdbArgs...)...)
	})
	if err != nil {
		return nil, err
	}
	if err := copyTree(template, p.DataDir, account); err != nil {
		return nil, err
	}
	conf, err := os.OpenFile(filepath.Join(p.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	_, err = conf.WriteString("\ninclude_if_exists 'harness.conf'\n")
	if err := errors.Join(err, conf.Close()); err != nil {
		return nil, fmt.Errorf("harness: postgresql.conf: %w", err)
	}
	// Only certificate logins over TCP; the Unix socket is the harness's
	// own door.
	hba := "local all all trust\nhostssl all all 127.0.0.1/32 cert\n"
	if err := os.WriteFile(filepath.Join(p.DataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return nil, fmt.Errorf("harness: pg_hba.conf: %w", err)
	}
	if err := chownAll(account, p.DataDir); err != nil {
		return nil, err
	}

	// A port picked free may be taken before the server binds it: retry
	// with another.
	for attempt := 1; ; attempt++ {
		if p.port, err = freePort(); err != nil {
			return nil, err
		}
		if err = p.writeConf(); err != nil {
			return nil, err
		}
		err = p.start()
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(err.Error(), "could not bind") {
			return nil, err
		}
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})

	for _, u := range o.Users {
		if err := p.createUser(u); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func pgEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "LANG=C", "TZ=UTC"}
}

// pgLogPrefix starts every log record; parseStatementLog depends on it.
// Continuation lines of a multi-line message begin with a tab instead.
const pgLogPrefix = "%m [%p] tg<%u|%d> "

var pgRecord = regexp.MustCompile(`^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \w+) \[(\d+)\] tg<([^|>]*)\|([^>]*)> ([A-Z0-9]+):  (.*)$`)

func (p *PostgresServer) writeConf() error {
	s := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(p.port),
		"unix_socket_directories": p.SocketDir,
		"ssl":                     "on",
		"ssl_cert_file":           p.ServerCertFile,
		"ssl_key_file":            p.ServerKeyFile,
		"ssl_ca_file":             p.ClientCAFile,
		// Throwaway data: durability costs time and buys nothing.
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"shared_buffers":     "16MB",
		"max_connections":    "50",
		"max_wal_size":       "64MB",
		// The statement log is the ground truth tests compare audit events
		// with.
		"log_statement":            "all",
		"log_connections":          "on",
		"log_destination":          "stderr",
		"logging_collector":        "on",
		"log_directory":            filepath.Dir(p.LogFile),
		"log_filename":             filepath.Base(p.LogFile),
		"log_file_mode":            "0644",
		"log_rotation_age":         "0",
		"log_rotation_size":        "0",
		"log_truncate_on_rotation": "off",
		"log_line_prefix":          pgLogPrefix,
		"log_timezone":             "UTC",
		"timezone":                 "UTC",
		"lc_messages":              "C",
	}
	for k, v := range p.settings {
		s[k] = v
	}
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Written by the test harness.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(s[k], "'", "''"))
	}
	path := filepath.Join(p.DataDir, "harness.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return chownAll(p.account, path)
}

func (p *PostgresServer) start() error {
	proc, err := StartProcess(Command{
		Name:        "postgres",
		Path:        p.bin.postgres,
		Args:        []string{"-D", p.DataDir},
		Dir:         p.Dir,
		Env:         pgEnv(),
		Log:         p.stderrFile,
		ExtraLogs:   []string{p.LogFile},
		User:        p.account,
		StopSignal:  syscall.SIGINT, // fast shutdown: ends sessions, no waiting for clients
		DeathSignal: syscall.SIGQUIT,
	})
	if err != nil {
		return err
	}
	err = proc.WaitReady(30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, p.AdminDSN())
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
	if err != nil {
		_ = proc.Stop()
		return err
	}
	p.mu.Lock()
	p.proc = proc
	p.mu.Unlock()
	return nil
}

func (p *PostgresServer) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return ""
	}
	return p.proc.LogTail(60)
}

// Host is the address the server listens on: 127.0.0.1.
func (p *PostgresServer) Host() string { return "127.0.0.1" }

// Port is the server's TCP port.
func (p *PostgresServer) Port() int { return p.port }

// Addr is host:port of the TCP listener.
func (p *PostgresServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// Pid is the postmaster's process id (0 before start).
func (p *PostgresServer) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return 0
	}
	return p.proc.Pid()
}

// AdminDSN connects as the superuser over the Unix socket, without TLS or
// password (pg_hba "local ... trust").
func (p *PostgresServer) AdminDSN() string {
	return pgConnString(map[string]string{
		"host": p.SocketDir, "port": strconv.Itoa(p.port), "user": p.Superuser,
		"dbname": "postgres", "sslmode": "disable",
	})
}

// DSNWithCert is a libpq connection string (pgx and psql take it) for user
// over TCP with TLS verify-full and the given client certificate. Empty
// certFile and keyFile leave the certificate out, to show that the server
// then refuses.
func (p *PostgresServer) DSNWithCert(user, certFile, keyFile string) string {
	kv := map[string]string{
		"host": p.Host(), "port": strconv.Itoa(p.port), "user": user, "dbname": "postgres",
		"sslmode": "verify-full", "sslrootcert": p.ServerCAFile,
	}
	if certFile != "" {
		kv["sslcert"] = certFile
	}
	if keyFile != "" {
		kv["sslkey"] = keyFile
	}
	return pgConnString(kv)
}

// DSN is DSNWithCert with a certificate for user from the test CA.
func (p *PostgresServer) DSN(t testing.TB, user string) string {
	t.Helper()
	cert, key := p.ClientCert(t, user)
	return p.DSNWithCert(user, cert, key)
}

// ClientCert returns the files of a test-CA certificate with CN=user,
// issued on first use. It fails the test when the server trusts an outside
// client CA instead of the test CA.
func (p *PostgresServer) ClientCert(t testing.TB, user string) (certFile, keyFile string) {
	t.Helper()
	c, err := p.clients.get(user)
	if err != nil {
		t.Fatal(err)
	}
	return c.certFile, c.keyFile
}

func pgConnString(kv map[string]string) string {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(kv))
	for _, k := range keys {
		v := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(kv[k])
		parts = append(parts, k+"='"+v+"'")
	}
	return strings.Join(parts, " ")
}

// Exec runs sql as the superuser. Without args it uses the simple query
// protocol, so sql may hold several statements.
func (p *PostgresServer) Exec(sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.AdminDSN())
	if err != nil {
		return fmt.Errorf("harness: connect to postgres as %s: %w", p.Superuser, err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("harness: postgres: %s: %w", sql, err)
	}
	return nil
}

// MustExec is Exec that fails the test on error.
func (p *PostgresServer) MustExec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if err := p.Exec(sql, args...); err != nil {
		t.Fatal(err)
	}
}

// CreateUser makes a login role without password that may create objects
// in the public schema; it logs in with a certificate whose CN is name.
func (p *PostgresServer) CreateUser(t testing.TB, name string) {
	t.Helper()
	if err := p.createUser(name); err != nil {
		t.Fatal(err)
	}
}

func (p *PostgresServer) createUser(name string) error {
	if name == "" {
		return errors.New("harness: postgres user name is empty")
	}
	id := pgx.Identifier{name}.Sanitize()
	return p.Exec("CREATE ROLE " + id + " LOGIN; GRANT CREATE, USAGE ON SCHEMA public TO " + id)
}

// Stop shuts the server down (fast shutdown, then kill) and waits until
// none of its processes is left. Stopping a stopped server does nothing.
func (p *PostgresServer) Stop() error {
	p.mu.Lock()
	proc := p.proc
	p.mu.Unlock()
	if proc == nil {
		return nil
	}
	return proc.Stop()
}

// Restart stops the server and starts it again on the same port and data.
func (p *PostgresServer) Restart() error {
	if err := p.Stop(); err != nil {
		return err
	}
	return p.start()
}

// PostgresStatement is one statement in the server's log.
type PostgresStatement struct {
	Time     string // as logged, UTC with milliseconds
	PID      int    // backend process
	User     string
	Database string
	// Kind is "statement" (simple query protocol), "execute" (extended
	// protocol; Name is the prepared statement or portal) or "rejected":
	// text the server refused before log_statement saw it (a syntax
	// error), known only from the error's STATEMENT line.
	Kind       string
	Name       string
	Text       string
	Parameters string // extended protocol: the DETAIL "parameters: $1 = ..." text
	Error      string // the ERROR the statement ended with, if any
}

var pgSync atomic.Int64

const pgSyncPrefix = "SELECT 'harness log sync "

// StatementLog returns the text of every statement in the server's log, in
// order; see StatementLogEntries.
func (p *PostgresServer) StatementLog() ([]string, error) {
	entries, err := p.StatementLogEntries()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Text
	}
	return out, nil
}

// StatementLogEntries returns every statement logged so far, including the
// harness's own administration (User is then Superuser). The log reaches
// its file through the logging collector a moment after the statement ran,
// so while the server runs this first logs a marker statement and waits
// for it to appear: whatever ran before the call is then in the result.
func (p *PostgresServer) StatementLogEntries() ([]PostgresStatement, error) {
	running := false
	p.mu.Lock()
	if p.proc != nil {
		select {
		case <-p.proc.Done():
		default:
			running = true
		}
	}
	p.mu.Unlock()
	if !running {
		return p.readStatementLog("")
	}
	marker := fmt.Sprintf("%s%d'", pgSyncPrefix, pgSync.Add(1))
	if err := p.Exec(marker); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, err := p.readStatementLog(marker)
		if err == nil || !errors.Is(err, errNoMarker) {
			return entries, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("harness: statement %q did not reach %s within 10s", marker, p.LogFile)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var errNoMarker = errors.New("marker not logged yet")

func (p *PostgresServer) readStatementLog(marker string) ([]PostgresStatement, error) {
	f, err := os.Open(p.LogFile)
	if err != nil {
		return nil, fmt.Errorf("harness: statement log: %w", err)
	}
	defer f.Close()
	entries, err := parseStatementLog(f)
	if err != nil {
		return nil, err
	}
	seen := marker == ""
	out := entries[:0]
	for _, e := range entries {
		if strings.HasPrefix(e.Text, pgSyncPrefix) && e.User == p.Superuser {
			seen = seen || e.Text == marker
			continue
		}
		out = append(out, e)
	}
	if !seen {
		return nil, errNoMarker
	}
	return out, nil
}

var pgExecute = regexp.MustCompile(`(?s)^execute (?:fetch from )?([^:]*): (.*)$`)

// parseStatementLog reads a log written with pgLogPrefix. A record starts
// with the prefix; PostgreSQL follows each newline inside a message with a
// tab, so a line starting with a tab continues the record before it.
func parseStatementLog(f io.Reader) ([]PostgresStatement, error) {
	type record struct {
		time, user, db, level, msg string
		pid                        int
		more                       []string // continuation lines, joined into msg at the end
	}
	var records []record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 64*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "\t") && len(records) > 0 {
			r := &records[len(records)-1]
			r.more = append(r.more, line[1:])
			continue
		}
		m := pgRecord.FindStringSubmatch(line)
		if m == nil {
			continue // output not written through the server's logger
		}
		pid, _ := strconv.Atoi(m[2])
		records = append(records, record{time: m[1], pid: pid, user: m[3], db: m[4], level: m[5], msg: m[6]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("harness: read statement log: %w", err)
	}
	for i := range records {
		if r := &records[i]; len(r.more) > 0 {
			r.msg = strings.Join(append([]string{r.msg}, r.more...), "\n")
		}
	}

	var out []PostgresStatement
	last := map[int]int{}       // pid → index in out of its latest statement
	lastErr := map[int]string{} // pid → ERROR text awaiting its STATEMENT line
	for _, r := range records {
		base := PostgresStatement{Time: r.time, PID: r.pid, User: r.user, Database: r.db}
		switch r.level {
		case "LOG":
			if text, ok := strings.CutPrefix(r.msg, "statement: "); ok {
				base.Kind, base.Text = "statement", text
			} else if m := pgExecute.FindStringSubmatch(r.msg); m != nil {
				base.Kind, base.Name, base.Text = "execute", m[1], m[2]
			} else {
				continue
			}
			out = append(out, base)
			last[r.pid] = len(out) - 1
		case "DETAIL":
			if params, ok := strings.CutPrefix(r.msg, "parameters: "); ok {
				if i, ok := last[r.pid]; ok && out[i].Kind == "execute" && out[i].Parameters == "" {
					out[i].Parameters = params
				}
			}
		case "ERROR", "FATAL":
			lastErr[r.pid] = r.msg
		case "STATEMENT":
			msg, ok := lastErr[r.pid]
			if !ok {
				continue
			}
			delete(lastErr, r.pid)
			if i, ok := last[r.pid]; ok && out[i].Text == r.msg && out[i].Error == "" {
				out[i].Error = msg
				continue
			}
			base.Kind, base.Text, base.Error = "rejected", r.msg, msg
			out = append(out, base)
			last[r.pid] = len(out) - 1
		}
	}
	return out, nil
}
