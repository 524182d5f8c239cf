package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/schemas"
)

// demoEnv is a running `tollgate demo` built from this tree, with tg.
type demoEnv struct {
	t        *testing.T
	dir      string
	tollgate string
	tg       string
	data     string
	proxy    string // the proxy's address, a free port
	identity string
	config   string
	home     string
	pgDir    string
	mdbDir   string // the throwaway MariaDB's directory
	redisDir string // the throwaway Redis's directory
	// tunnelHint is the connect command tg proxy db printed.
	tunnelHint string
	stderr     *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// needPrograms fails the test when a client it drives is not installed.
func needPrograms(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s is not installed (Debian: postgresql-client for psql and pgbench, default-jdk-headless for java and javac): %v", n, err)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// env is the environment of every child: no PG* or TOLLGATE_* settings
// of the machine, and a home of the test's own.
func (d *demoEnv) env(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "TOLLGATE_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		out = append(out, kv)
	}
	return append(append(out, "HOME="+d.home, "PGCONNECT_TIMEOUT=10", "LC_ALL=C.UTF-8"), extra...)
}

func startDemo(t *testing.T) *demoEnv {
	t.Helper()
	return startDemoIn(t, "")
}

// startDemoIn starts the demo as startDemo does; with a workDir, from that
// directory with its default data dir, tollgate-demo, below it, so the
// commands it prints name the data dir by relative paths.
func startDemoIn(t *testing.T, workDir string) *demoEnv {
	t.Helper()
	needPrograms(t, "psql", "pgbench", "java", "javac", "mariadb", "mariadbd", "mariadb-install-db")
	if _, err := os.Stat("/usr/share/java/postgresql.jar"); err != nil {
		t.Fatalf("the PostgreSQL JDBC driver is not installed (Debian: libpostgresql-jdbc-java): %v", err)
	}
	dir := t.TempDir()
	d := &demoEnv{t: t, dir: dir, tollgate: filepath.Join(dir, "tollgate"), tg: filepath.Join(dir, "tg"),
		data: filepath.Join(dir, "data"), home: filepath.Join(dir, "home"), stderr: &lockedBuffer{}}
	if err := os.MkdirAll(d.home, 0o700); err != nil {
		t.Fatal(err)
	}
	// One build of both, so they share the work.
	if out, err := exec.Command("go", "build", "-o", dir+"/", ".", "../tg").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dataArg := d.data
	if workDir != "" {
		dataArg, d.data = "tollgate-demo", filepath.Join(workDir, "tollgate-demo")
	}
	d.proxy = freeAddr(t)
	cmd := exec.Command(d.tollgate, "demo", "--data-dir", dataArg, "--nats-listen", freeAddr(t),
		"--proxy-listen", d.proxy, "--agent-listen", freeAddr(t))
	cmd.Dir = workDir
	cmd.Env = d.env()
	cmd.Stderr = d.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	exited := make(chan struct{})
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// Any ending stops everything and removes the throwaway
		// PostgreSQL; the data dir stays. Here the worst of them: the
		// pipe its output went through is gone (make run | tee, tee
		// ended first) and it is told to stop by SIGTERM.
		_ = stdout.Close()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			if exitErr != nil {
				t.Errorf("tollgate demo exited with %v after SIGTERM\n%s", exitErr, d.stderr)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("tollgate demo did not stop within 30s of SIGTERM\n%s", d.stderr)
			return
		}
		if d.pgDir == "" {
			return
		}
		if _, err := os.Stat(d.pgDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("throwaway PostgreSQL directory %s still there after the demo stopped: %v", d.pgDir, err)
		}
		if _, err := os.Stat(d.mdbDir); d.mdbDir != "" && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("throwaway MariaDB directory %s still there after the demo stopped: %v", d.mdbDir, err)
		}
		if _, err := os.Stat(d.redisDir); d.redisDir != "" && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("throwaway Redis directory %s still there after the demo stopped: %v", d.redisDir, err)
		}
		for _, f := range []string{d.identity, filepath.Join(d.data, "postgres.log"), filepath.Join(d.data, "mariadb.log")} {
			if _, err := os.Stat(f); err != nil {
				t.Errorf("the data dir should keep %s: %v", f, err)
			}
		}
	})
	var printed []string
	timeout := time.After(90 * time.Second)
	for len(printed) < 4 {
		select {
		case l, ok := <-lines:
			if !ok {
				<-exited
				t.Fatalf("tollgate demo exited: %v\n%s", exitErr, d.stderr)
			}
			printed = append(printed, l)
		case <-timeout:
			_ = cmd.Process.Kill()
			t.Fatalf("tollgate demo printed %q within 90s\n%s", printed, d.stderr)
		}
	}
	d.identity = filepath.Join(d.data, "demo.identity")
	d.config = filepath.Join(d.data, "tollgate.yaml")
	// Exactly the commands a user needs, runnable as printed: one per
	// database (MariaDB and Redis are installed here, so the demo has
	// them), and the audit tail.
	shownIdentity, shownConfig := d.identity, d.config
	if workDir != "" {
		shownIdentity, shownConfig = "tollgate-demo/demo.identity", "tollgate-demo/tollgate.yaml"
	}
	want := []string{
		fmt.Sprintf("%s -i %s db connect demo-postgres --db-user=demo --db-name=demo", d.tg, shownIdentity),
		fmt.Sprintf("%s -i %s db connect demo-mariadb --db-user=demo --db-name=demo", d.tg, shownIdentity),
		fmt.Sprintf("%s -i %s db connect demo-redis --db-user=demo --db-name=0", d.tg, shownIdentity),
		fmt.Sprintf("%s --config=%s audit tail --follow", d.tollgate, shownConfig),
	}
	if !slices.Equal(printed, want) {
		t.Fatalf("demo printed\n%s\nwant\n%s", strings.Join(printed, "\n"), strings.Join(want, "\n"))
	}
	// Before anything was ready, it said what it was doing.
	for _, step := range []string{"starting a throwaway PostgreSQL", "starting a throwaway MariaDB", "starting NATS, the broker and the agent"} {
		if !strings.Contains(d.stderr.String(), step) {
			t.Errorf("the demo's log does not say %q before it is ready:\n%s", step, d.stderr)
		}
	}
	if m := regexp.MustCompile(`throwaway MariaDB running.* dir=(\S+)`).FindStringSubmatch(d.stderr.String()); m != nil {
		d.mdbDir = m[1]
	} else {
		t.Fatalf("no MariaDB directory in the demo's log:\n%s", d.stderr)
	}
	if m := regexp.MustCompile(`throwaway Redis running.* dir=(\S+)`).FindStringSubmatch(d.stderr.String()); m != nil {
		d.redisDir = m[1]
	} else {
		t.Fatalf("no Redis directory in the demo's log:\n%s", d.stderr)
	}
	if m := regexp.MustCompile(`throwaway PostgreSQL running.* dir=(\S+)`).FindStringSubmatch(d.stderr.String()); m != nil {
		d.pgDir = m[1]
	} else {
		t.Fatalf("no PostgreSQL directory in the demo's log:\n%s", d.stderr)
	}
	return d
}

// run runs a program to its end and returns stdout and stderr.
func (d *demoEnv) run(name string, args ...string) (string, string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = d.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func (d *demoEnv) mustRun(name string, args ...string) string {
	d.t.Helper()
	out, errb, err := d.run(name, args...)
	if err != nil {
		d.t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out, errb)
	}
	return out
}

// tunnel starts `tg proxy db demo-postgres --tunnel` and returns its port
// once it listens.
func (d *demoEnv) tunnel(extra ...string) string {
	d.t.Helper()
	port := strings.TrimPrefix(freeAddr(d.t), "127.0.0.1:")
	args := append([]string{"-i", d.identity, "proxy", "db", "demo-postgres", "--tunnel", "--port=" + port}, extra...)
	cmd := exec.Command(d.tg, args...)
	cmd.Env = d.env()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	errb := &lockedBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				d.t.Errorf("tg proxy db exited with %v after SIGINT\n%s", err, errb)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			d.t.Errorf("tg proxy db did not stop on SIGINT")
		}
	})
	sc := bufio.NewScanner(stdout)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.HasPrefix(strings.TrimSpace(sc.Text()), "psql ") {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			d.tunnelHint = strings.TrimSpace(sc.Text())
			return port
		}
	}
	d.t.Fatalf("tg proxy db printed %q and stopped\n%s", seen, errb)
	return ""
}

// auditEvents reads every stored event with `tollgate audit tail`, each
// checked against its schema.
func (d *demoEnv) auditEvents(args ...string) []map[string]any {
	d.t.Helper()
	out := d.mustRun(d.tollgate, append([]string{"--config=" + d.config, "audit", "tail"}, args...)...)
	var evs []map[string]any
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		if err := schemas.Validate([]byte(line)); err != nil {
			d.t.Fatalf("event %d does not match its schema: %v\n%s", i, err, line)
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			d.t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func ofType(evs []map[string]any, typ string) []map[string]any {
	var out []map[string]any
	for _, e := range evs {
		if e["type"] == typ {
			out = append(out, e)
		}
	}
	return out
}

// pgLogRecord matches demoLogPrefix: time, pid, user, database, level and
// message; a continuation line starts with a tab.
var (
	pgLogRecord  = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \w+ \[(\d+)\] tg<([^|>]*)\|([^>]*)> ([A-Z0-9]+):  (.*)$`)
	pgLogExecute = regexp.MustCompile(`(?s)^execute (?:fetch from )?([^:]*): (.*)$`)
)

// loggedStatement is one statement in PostgreSQL's own log.
type loggedStatement struct {
	pid        string
	user, db   string
	text       string
	parameters string // "$1 = '…', …" of an extended-protocol execution
	execute    bool
}

func (d *demoEnv) statementLog() []loggedStatement {
	d.t.Helper()
	b, err := os.ReadFile(filepath.Join(d.data, "postgres.log"))
	if err != nil {
		d.t.Fatal(err)
	}
	type record struct{ pid, user, db, level, msg string }
	var recs []record
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "\t") && len(recs) > 0 {
			recs[len(recs)-1].msg += "\n" + line[1:]
			continue
		}
		if m := pgLogRecord.FindStringSubmatch(line); m != nil {
			recs = append(recs, record{m[1], m[2], m[3], m[4], m[5]})
		}
	}
	var out []loggedStatement
	last := map[string]int{}
	for _, r := range recs {
		switch r.level {
		case "LOG":
			s := loggedStatement{pid: r.pid, user: r.user, db: r.db}
			if text, ok := strings.CutPrefix(r.msg, "statement: "); ok {
				s.text = text
			} else if m := pgLogExecute.FindStringSubmatch(r.msg); m != nil {
				s.text, s.execute = m[2], true
			} else {
				continue
			}
			out = append(out, s)
			last[r.pid] = len(out) - 1
		case "DETAIL":
			if p, ok := strings.CutPrefix(r.msg, "parameters: "); ok {
				if i, ok := last[r.pid]; ok && out[i].execute && out[i].parameters == "" {
					out[i].parameters = p
				}
			}
		}
	}
	return out
}

// pgParams renders event parameters the way PostgreSQL logs them.
func pgParams(ps []any) string {
	var parts []string
	for i, p := range ps {
		v := "NULL"
		if s, ok := p.(string); ok && s != "NULL" {
			v = "'" + strings.ReplaceAll(s, "'", "''") + "'"
		}
		parts = append(parts, fmt.Sprintf("$%d = %s", i+1, v))
	}
	return strings.Join(parts, ", ")
}

// waitLog waits until PostgreSQL logged a statement containing s.
func (d *demoEnv) waitLog(s string) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(d.data, "postgres.log"))
		if bytes.Contains(b, []byte(s)) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.t.Fatalf("PostgreSQL did not log %q within 20s", s)
}

func TestDemoEndToEnd(t *testing.T) {
	began := time.Now()
	phase := func(name string) { t.Logf("%6.1fs %s", time.Since(began).Seconds(), name) }
	d := startDemo(t)
	phase("demo up")
	port := d.tunnel("--db-user=demo", "--db-name=demo")
	if want := `psql "host=127.0.0.1 port=` + port + ` user=demo dbname=demo sslmode=disable"`; d.tunnelHint != want {
		t.Fatalf("tunnel printed %q, want %q", d.tunnelHint, want)
	}
	// The client asks for TLS (sslmode=prefer) and for another user and
	// database: the tunnel answers the SSLRequest itself and sets the
	// startup's user and database to those of --db-user and --db-name.
	viaTunnel := "host=127.0.0.1 port=" + port + " user=nobody dbname=nothing"
	out := d.mustRun("psql", viaTunnel, "-X", "-At", "-v", "ON_ERROR_STOP=1",
		"-c", "create table notes (id int primary key, body text)",
		"-c", "insert into notes values (1, 'first'), (2, 'second')",
		"-c", "select current_user || '/' || current_database() || '/' || count(*) from notes",
		"-c", "create table jdbc_t (id int primary key, name text)")
	if !strings.Contains(out, "demo/demo/2") {
		t.Fatalf("psql through the tunnel: %q", out)
	}

	// Without --db-user and --db-name the client's own are used; the
	// hint names the identity's only db_users trait.
	plain := d.tunnel()
	if want := `psql "host=127.0.0.1 port=` + plain + ` user=demo sslmode=disable"`; d.tunnelHint != want {
		t.Fatalf("tunnel printed %q, want %q", d.tunnelHint, want)
	}
	out = d.mustRun("psql", "host=127.0.0.1 port="+plain+" user=demo dbname=postgres sslmode=disable", "-X", "-At", "-c", "select current_database()")
	if strings.TrimSpace(out) != "postgres" {
		t.Fatalf("tunnel without --db-name: connected to %q", out)
	}
	phase("psql")
	// Ctrl-C in psql: it sends a cancel request to the tunnel port, the
	// tunnel carries it to the agent, the agent to the backend.
	sleeper := exec.Command("psql", viaTunnel, "-X", "-c", "select pg_sleep(300)")
	sleeper.Env = d.env()
	var sleepOut bytes.Buffer
	sleeper.Stdout, sleeper.Stderr = &sleepOut, &sleepOut
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	d.waitLog("statement: select pg_sleep(300)")
	if err := sleeper.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = sleeper.Process.Kill()
		t.Fatal("pg_sleep(300) was not cancelled")
	}
	if !strings.Contains(sleepOut.String(), "canceling statement due to user request") {
		t.Fatalf("psql after Ctrl-C: %q", sleepOut.String())
	}

	phase("cancel")
	// tg db connect runs psql through its own tunnel, passing arguments
	// after -- and exiting with psql's status.
	out = d.mustRun(d.tg, "-i", d.identity, "db", "connect", "demo-postgres", "--db-user=demo", "--db-name=demo", "--",
		"-X", "-At", "-c", "select 'via connect ' || current_user")
	if strings.TrimSpace(out) != "via connect demo" {
		t.Fatalf("tg db connect: %q", out)
	}
	_, errOut, err := d.run(d.tg, "-i", d.identity, "db", "connect", "demo-postgres", "--db-user=demo", "--db-name=demo", "--",
		"-X", "-v", "ON_ERROR_STOP=1", "-c", "select nosuch")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(errOut, `column "nosuch" does not exist`) {
		t.Fatalf("tg db connect with a failing statement: %v %q", err, errOut)
	}

	// The printed MariaDB command: the mariadb client through tg's tunnel,
	// as the demo user, the statement in MariaDB's own general log.
	out = d.mustRun(d.tg, "-i", d.identity, "db", "connect", "demo-mariadb", "--db-user=demo", "--db-name=demo", "--",
		"-N", "-B", "-e", "select concat('via mariadb ', current_user(), ' ', database())")
	if strings.TrimSpace(out) != "via mariadb demo@% demo" {
		t.Fatalf("tg db connect demo-mariadb: %q", out)
	}
	if b, err := os.ReadFile(filepath.Join(d.data, "mariadb.log")); err != nil || !strings.Contains(string(b), "select concat('via mariadb '") {
		t.Fatalf("MariaDB's general log lacks the statement: %v\n%s", err, b)
	}

	// The printed Redis command: redis-cli through tg's tunnel, signed in
	// by the agent as the ACL user demo; the arguments after -- are the
	// command. Both commands are audit events (checked below).
	out = d.mustRun(d.tg, "-i", d.identity, "db", "connect", "demo-redis", "--db-user=demo", "--db-name=0", "--",
		"SET", "demo-key", "via redis-cli")
	if strings.TrimSpace(out) != "OK" {
		t.Fatalf("tg db connect demo-redis SET: %q", out)
	}
	out = d.mustRun(d.tg, "-i", d.identity, "db", "connect", "demo-redis", "--db-user=demo", "--db-name=0", "--",
		"ACL", "WHOAMI")
	if strings.TrimSpace(out) != "demo" {
		t.Fatalf("tg db connect demo-redis ACL WHOAMI: %q", out)
	}
	// A logical database outside db_names is refused by the agent.
	out = d.mustRun(d.tg, "-i", d.identity, "db", "connect", "demo-redis", "--db-user=demo", "--db-name=0", "--",
		"SELECT", "3")
	if !strings.Contains(out, "tollgate") {
		t.Fatalf("tg db connect demo-redis SELECT 3: %q, want the agent's refusal", out)
	}

	phase("connect")
	// tg db login: libpq straight to the agent (SSLRequest, TLS with the
	// database name as SNI, verify-full against the host CA, the identity
	// file as certificate and key).
	out = d.mustRun(d.tg, "-i", d.identity, "db", "login", "demo-postgres", "--db-user=demo", "--db-name=demo")
	if !strings.Contains(out, `psql "service=tollgate-demo-postgres"`) {
		t.Fatalf("tg db login: %s", out)
	}
	out = d.mustRun("psql", "service=tollgate-demo-postgres", "-X", "-At", "-c", "select 'direct ' || current_user || ' ' || (select ssl from pg_stat_ssl where pid = pg_backend_pid())")
	if strings.TrimSpace(out) != "direct demo true" {
		t.Fatalf("psql with the service entry: %q", out)
	}
	d.mustRun(d.tg, "db", "logout", "demo-postgres")
	if _, errOut, err := d.run("psql", "service=tollgate-demo-postgres", "-X", "-c", "select 1"); err == nil || !strings.Contains(errOut, "tollgate-demo-postgres") {
		t.Fatalf("after tg db logout: %v %s", err, errOut)
	}

	phase("login")
	// JDBC through the tunnel: prepared statements with parameters.
	javaDir := filepath.Join(d.dir, "java")
	if err := os.MkdirAll(javaDir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := `import java.sql.*;
public class TollgateJDBC {
  public static void main(String[] args) throws Exception {
    try (Connection c = DriverManager.getConnection(args[0])) {
      try (PreparedStatement ps = c.prepareStatement("select ?::int + 1, ?::text || '!'")) {
        ps.setInt(1, 41);
        ps.setString(2, "jdbc");
        try (ResultSet rs = ps.executeQuery()) { rs.next(); System.out.println("jdbc " + rs.getInt(1) + " " + rs.getString(2)); }
      }
      try (PreparedStatement ps = c.prepareStatement("insert into jdbc_t (id, name) values (?, ?)")) {
        for (int i = 1; i <= 3; i++) { ps.setInt(1, i); ps.setString(2, "\u00fcn\u00ef-" + i); ps.executeUpdate(); }
      }
    }
  }
}
`
	if err := os.WriteFile(filepath.Join(javaDir, "TollgateJDBC.java"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	d.mustRun("javac", "-encoding", "UTF-8", "-d", javaDir, filepath.Join(javaDir, "TollgateJDBC.java"))
	out = d.mustRun("java", "-cp", "/usr/share/java/postgresql.jar:"+javaDir, "TollgateJDBC",
		"jdbc:postgresql://127.0.0.1:"+port+"/demo?user=demo&sslmode=disable")
	if strings.TrimSpace(out) != "jdbc 42 jdbc!" {
		t.Fatalf("java: %q", out)
	}

	phase("jdbc")
	// pgbench through the tunnel: the TPC-B-like script, simple and
	// prepared, 8 clients.
	bench := []string{"-h", "127.0.0.1", "-p", port, "-U", "demo"}
	d.mustRun("pgbench", append(slices.Clone(bench), "-i", "-q", "demo")...)
	phase("pgbench -i")
	for _, mode := range []string{"simple", "prepared"} {
		out := d.mustRun("pgbench", append(slices.Clone(bench), "-M", mode, "-c", "8", "-j", "2", "-t", "50", "demo")...)
		if !strings.Contains(out, "number of transactions actually processed: 400/400") {
			t.Fatalf("pgbench -M %s:\n%s", mode, out)
		}
	}

	phase("pgbench")
	// Every session has ended once its events are all stored.
	var evs []map[string]any
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs = d.auditEvents()
		starts, ends := 0, len(ofType(evs, "db.session.end"))
		for _, s := range ofType(evs, "db.session.start") {
			if s["success"] == true {
				starts++
			}
		}
		if starts > 0 && starts == ends {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions started, %d ended", starts, ends)
		}
		time.Sleep(100 * time.Millisecond)
	}

	phase("audit read")
	// ei is gapless in every session.
	eis := map[string][]int{}
	for _, e := range evs {
		if sid, ok := e["sid"].(string); ok {
			eis[sid] = append(eis[sid], int(e["ei"].(float64)))
		}
	}
	for sid, list := range eis {
		slices.Sort(list)
		for i, ei := range list {
			if ei != i {
				t.Fatalf("session %s: ei %v is not 0..%d without gaps or repeats", sid, list, len(list)-1)
			}
		}
	}
	if len(eis) < 2*8+4 {
		t.Fatalf("only %d sessions in the audit trail", len(eis))
	}

	// The Redis commands through tg db connect are events of demo-redis.
	redisQueries := map[string]bool{}
	for _, e := range ofType(evs, "db.session.query") {
		if e["db_service"] == "demo-redis" {
			redisQueries[e["db_query"].(string)] = true
		}
	}
	for _, want := range []string{"SET demo-key", "ACL WHOAMI", "SELECT 3"} {
		found := false
		for q := range redisQueries {
			found = found || strings.HasPrefix(q, want)
		}
		if !found {
			t.Errorf("no db.session.query event of demo-redis for %q in %v", want, redisQueries)
		}
	}

	// The cancel is an event; the JDBC binds carry their parameters.
	cancels := ofType(evs, "db.session.postgres.cancel")
	if len(cancels) != 1 || cancels[0]["success"] != true || cancels[0]["tls"] != true || cancels[0]["user"] != "demo" {
		t.Fatalf("cancel events %v", cancels)
	}
	binds := map[string]bool{}
	// A Bind executed in the same batch is recorded by its execute event.
	for _, b := range append(ofType(evs, "db.session.postgres.bind"), ofType(evs, "db.session.postgres.execute")...) {
		if ps, ok := b["db_query_parameters"].([]any); ok {
			binds[pgParams(ps)] = true
		}
	}
	for _, want := range []string{"$1 = '41', $2 = 'jdbc'", "$1 = '2', $2 = 'ünï-2'"} {
		if !binds[want] {
			t.Errorf("no bind event with parameters %s", want)
		}
	}
	parses := 0
	for _, p := range ofType(evs, "db.session.postgres.parse") {
		if p["db_query"] == "insert into jdbc_t (id, name) values ($1, $2)" {
			parses++
		}
	}
	if parses == 0 {
		t.Error("no parse event for the JDBC insert with its $1, $2 placeholders")
	}

	// Ground truth: every statement PostgreSQL logged for the demo user
	// has its audit event, text and parameters alike, as often as it ran.
	have := map[string]int{}
	for _, e := range ofType(evs, "db.session.query") {
		have["Q "+e["db_query"].(string)]++
	}
	for _, e := range ofType(evs, "db.session.postgres.execute") {
		ps, _ := e["db_query_parameters"].([]any)
		have["E "+e["db_query"].(string)+" | "+pgParams(ps)]++
	}
	logged, pgbenchLogged := 0, 0
	for _, s := range d.statementLog() {
		if s.user != "demo" {
			continue
		}
		logged++
		if strings.Contains(s.text, "pgbench_") {
			pgbenchLogged++
		}
		key := "Q " + s.text
		if s.execute {
			key = "E " + s.text + " | " + s.parameters
		}
		if have[key] == 0 {
			t.Errorf("statement in PostgreSQL's log without its audit event (pid %s): %s", s.pid, key)
			continue
		}
		have[key]--
	}
	// Each pgbench transaction is 5 statements on tables and 2 of
	// transaction control, 800 transactions in all.
	if pgbenchLogged < 800*5 {
		t.Fatalf("PostgreSQL logged %d pgbench statements of demo (of %d), want at least %d", pgbenchLogged, logged, 800*5)
	}

	phase("checks")
	// Filters: one type, one session.
	only := d.auditEvents("--type=db.session.postgres.cancel")
	if len(only) != 1 || only[0]["id"] != cancels[0]["id"] {
		t.Fatalf("--type filter: %v", only)
	}
	sid := cancels[0]["sid"].(string)
	sess := d.auditEvents("--session=" + sid)
	if len(sess) != len(eis[sid]) {
		t.Fatalf("--session %s: %d events, want %d", sid, len(sess), len(eis[sid]))
	}
	if _, errOut, err := d.run(d.tollgate, "--config="+d.config, "audit", "tail", "--format=xml"); err == nil || !strings.Contains(errOut, `--format: "xml"`) {
		t.Fatalf("--format=xml: %v %s", err, errOut)
	}

	phase("filters")
	// --follow prints events as they are stored.
	follow := exec.Command(d.tollgate, "--config="+d.config, "audit", "tail", "--follow", "--type=db.session.query")
	follow.Env = d.env()
	fout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(fout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "follow-marker") {
				found <- true
				return
			}
		}
		found <- false
	}()
	d.mustRun("psql", viaTunnel, "-X", "-c", "select 'follow-marker'")
	select {
	case ok := <-found:
		if !ok {
			t.Fatal("audit tail --follow ended without the new event")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("audit tail --follow did not print the new event within 20s")
	}
	_ = follow.Process.Signal(syscall.SIGINT)
	if err := follow.Wait(); err != nil {
		t.Fatalf("audit tail --follow after SIGINT: %v", err)
	}
	t.Logf("%d events, %d sessions, %d statements of demo in PostgreSQL's log, %d of them pgbench's", len(evs), len(eis), logged, pgbenchLogged)
}
