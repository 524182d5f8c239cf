package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/test/harness"
)

// PgbouncerOptions configures a pgbouncer in session mode with TLS on both
// legs.
type PgbouncerOptions struct {
	// Upstream is the database: its address and the name clients use.
	UpstreamHost string
	UpstreamPort int
	DBName       string
	// Users may log in; each proves who it is with a client certificate
	// (auth_type cert), as the database requires of pgbouncer in turn.
	Users []string
	// ServerCA verifies the database's certificate; ServerCert and
	// ServerKey are the certificate pgbouncer presents to it (PEM).
	ServerCA, ServerCert, ServerKey []byte
	// ClientCert and ClientKey are pgbouncer's own certificate towards
	// clients; ClientCA verifies the clients' certificates (PEM).
	ClientCert, ClientKey, ClientCA []byte
	// PoolSize is the most server connections per user and database.
	PoolSize int
}

// Pgbouncer is a running pgbouncer.
type Pgbouncer struct {
	Dir  string
	Port int
	proc *harness.Process
}

// Addr is host:port of the listener.
func (p *Pgbouncer) Addr() string { return "127.0.0.1:" + strconv.Itoa(p.Port) }

// StartPgbouncer starts pgbouncer (the Debian package's /usr/sbin binary)
// in a directory of its own, as the postgres account when the test runs as
// root since pgbouncer refuses to run as root. It stops when the test ends.
func StartPgbouncer(tb testing.TB, o PgbouncerOptions) *Pgbouncer {
	tb.Helper()
	p, err := startPgbouncer(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.proc.Stop(); err != nil {
			tb.Errorf("pgbouncer: %v", err)
		}
		os.RemoveAll(p.Dir)
	})
	return p
}

func startPgbouncer(o PgbouncerOptions) (*Pgbouncer, error) {
	bin, ok := findPgbouncer()
	if !ok {
		return nil, errors.New("pgbouncer not found in /usr/sbin or PATH: install the Debian package pgbouncer")
	}
	account, err := pgbouncerAccount()
	if err != nil {
		return nil, err
	}
	// Its own directory under /tmp, not the test's (0700, owned by root):
	// the account pgbouncer runs as must reach its files.
	dir, err := os.MkdirTemp("", "tg-pgbouncer-")
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: %w", err)
	}
	files := map[string][]byte{
		"server-ca.crt": o.ServerCA, "server.crt": o.ServerCert, "server.key": o.ServerKey,
		"client-ca.crt": o.ClientCA, "listen.crt": o.ClientCert, "listen.key": o.ClientKey,
	}
	var users strings.Builder
	for _, u := range o.Users {
		// With auth_type cert the password is never checked; the file
		// only names who may log in.
		fmt.Fprintf(&users, "%q \"\"\n", u)
	}
	files["userlist.txt"] = []byte(users.String())
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, fmt.Errorf("pgbouncer: %w", err)
		}
	}
	pool := o.PoolSize
	if pool <= 0 {
		pool = 40
	}
	var lastErr error
	// A port picked free may be taken before pgbouncer binds it.
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freeLoopbackPort()
		if err != nil {
			return nil, err
		}
		conf := fmt.Sprintf(`[databases]
%s = host=%s port=%d dbname=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
logfile = %s
pidfile = %s
auth_type = cert
auth_file = %s
pool_mode = session
default_pool_size = %d
max_client_conn = 200
client_tls_sslmode = verify-full
client_tls_cert_file = %s
client_tls_key_file = %s
client_tls_ca_file = %s
server_tls_sslmode = verify-full
server_tls_ca_file = %s
server_tls_cert_file = %s
server_tls_key_file = %s
log_connections = 0
log_disconnections = 0
`, o.DBName, o.UpstreamHost, o.UpstreamPort, o.DBName, port,
			filepath.Join(dir, "pgbouncer.log"), filepath.Join(dir, "pgbouncer.pid"),
			filepath.Join(dir, "userlist.txt"), pool,
			filepath.Join(dir, "listen.crt"), filepath.Join(dir, "listen.key"), filepath.Join(dir, "client-ca.crt"),
			filepath.Join(dir, "server-ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
		confPath := filepath.Join(dir, "pgbouncer.ini")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			return nil, fmt.Errorf("pgbouncer: %w", err)
		}
		if err := chownTree(dir, account); err != nil {
			return nil, err
		}
		proc, err := harness.StartProcess(harness.Command{
			Name: "pgbouncer", Path: bin, Args: []string{confPath}, Dir: dir,
			Env: []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"},
			Log: filepath.Join(dir, "pgbouncer.stderr"), ExtraLogs: []string{filepath.Join(dir, "pgbouncer.log")},
			User: account, StopSignal: syscall.SIGINT,
		})
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		err = proc.WaitReady(15*time.Second, func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return err
			}
			return c.Close()
		})
		if err == nil {
			return &Pgbouncer{Dir: dir, Port: port, proc: proc}, nil
		}
		_ = proc.Stop()
		lastErr = err
		if !strings.Contains(err.Error(), "in use") {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func findPgbouncer() (string, bool) {
	if fi, err := os.Stat("/usr/sbin/pgbouncer"); err == nil && !fi.IsDir() {
		return "/usr/sbin/pgbouncer", true
	}
	p, err := exec.LookPath("pgbouncer")
	return p, err == nil
}

// pgbouncerAccount is nil (run as the current user) unless the test runs as
// root; then it is the postgres account the harness runs PostgreSQL as.
func pgbouncerAccount() (*harness.SystemUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgbouncer refuses to run as root and there is no postgres account to run it as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("pgbouncer: account postgres: %w", err)
	}
	return &harness.SystemUser{Name: "postgres", UID: uint32(uid), GID: uint32(gid)}, nil
}

func chownTree(dir string, u *harness.SystemUser) error {
	if u == nil {
		return nil
	}
	return filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if err := os.Chown(path, int(u.UID), int(u.GID)); err != nil {
			return fmt.Errorf("pgbouncer: %w", err)
		}
		return nil
	})
}

func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitCtx is a context for setup steps that must not hang the benchmark.
func waitCtx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// CPUTime is the user and system time pgbouncer has used so far.
func (p *Pgbouncer) CPUTime() (time.Duration, error) {
	return ProcessCPUTime(p.proc.Pid())
}
