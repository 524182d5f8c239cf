package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-db/tollgate/broker/ca"
)

// demoPostgres is the throwaway PostgreSQL of `tollgate demo`: a fresh
// cluster in a temporary directory that trusts the db-client CA for
// certificate logins over TCP, with a server certificate from the db CA,
// and logs every statement (the ground truth the audit trail can be
// checked against).
type demoPostgres struct {
	demoServer // Dir holds the cluster, its socket and TLS files
	Port       int
	// LogFile is the server's log (log_statement=all); it is kept.
	LogFile string
}

// demoLogPrefix starts every PostgreSQL log record: time, pid, user and
// database, so statements can be attributed.
const demoLogPrefix = "%m [%p] tg<%u|%d> "

// postgresBinDir finds the server programs: PG_BINDIR, else the newest
// /usr/lib/postgresql/*/bin, else the directory of pg_ctl in PATH.
func postgresBinDir() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL server programs found (install the postgresql package, or set PG_BINDIR to the directory of initdb and postgres)")
}

// startDemoPostgres creates and starts the cluster. port 0 picks a free
// one. The log goes to logFile (appended to).
func startDemoPostgres(ctx context.Context, cas *ca.Authorities, port int, logFile string) (p *demoPostgres, err error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	// PostgreSQL refuses to run as root: run it as the postgres account.
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, PostgreSQL must run as the postgres system account, which does not exist (the Debian postgresql package creates it): %w", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// A short path under the system temp dir: the socket path must fit
	// in 108 bytes, and the postgres account must reach it when the data
	// dir lies under root's home.
	dir, err := os.MkdirTemp("", "tollgate-demo-pg-")
	if err != nil {
		return nil, err
	}
	// Stopped with SIGINT, PostgreSQL's fast shutdown.
	p = &demoPostgres{demoServer: newDemoServer("postgres", dir, syscall.SIGINT, func() string { return "see " + logFile }), LogFile: logFile}
	defer func() {
		if err != nil {
			p.Stop()
		}
	}()
	paths, err := cas.WriteDBFiles(filepath.Join(dir, "server"), []string{"localhost", "127.0.0.1"}, 0)
	if err != nil {
		return nil, err
	}
	if cred != nil {
		for _, f := range append(paths, dir) {
			if err := os.Chown(f, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, err
			}
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"--auth-local=trust", "--auth-host=reject", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.Dir = dir
	initdb.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, strings.TrimSpace(string(out)))
	}
	// The superuser comes in over the private socket only; over TCP,
	// certificate logins: the certificate's CN is the database user.
	hba := "local all postgres trust\nhostssl all all 127.0.0.1/32 cert\nhostssl all all ::1/128 cert\n"
	hbaFile := filepath.Join(data, "pg_hba.conf")
	if err := os.WriteFile(hbaFile, []byte(hba), 0o600); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(hbaFile, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	if port == 0 {
		if port, err = freeTCPPort(); err != nil {
			return nil, err
		}
	}
	p.Port = port
	settings := [][2]string{
		{"listen_addresses", "127.0.0.1"},
		{"port", strconv.Itoa(port)},
		{"unix_socket_directories", dir},
		{"ssl", "on"},
		{"ssl_cert_file", filepath.Join(dir, "server.crt")},
		{"ssl_key_file", filepath.Join(dir, "server.key")},
		{"ssl_ca_file", filepath.Join(dir, "server.cas")},
		{"log_statement", "all"},
		{"log_connections", "on"},
		{"log_line_prefix", demoLogPrefix},
		{"log_timezone", "UTC"},
		{"timezone", "UTC"},
		{"lc_messages", "C"},
		// Throwaway data: durability costs time and buys nothing here.
		{"fsync", "off"},
		{"synchronous_commit", "off"},
		{"full_page_writes", "off"},
		{"max_connections", "50"},
		{"shared_buffers", "32MB"},
	}
	args := []string{"-D", data}
	for _, s := range settings {
		args = append(args, "-c", s[0]+"="+s[1])
	}
	logf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := p.start(cmd, cred); err != nil {
		return nil, err
	}
	err = p.waitReady(ctx, 30*time.Second, func() error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		c, err := pgx.Connect(cctx, p.AdminDSN("postgres"))
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// AdminDSN connects as the superuser over the private socket.
func (p *demoPostgres) AdminDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", p.Dir, p.Port, db)
}

// Exec runs statements as the superuser.
func (p *demoPostgres) Exec(ctx context.Context, db string, sqls ...string) error {
	c, err := pgx.Connect(ctx, p.AdminDSN(db))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	for _, s := range sqls {
		if _, err := c.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

func freeTCPPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
