package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tollgate-db/tollgate/broker/ca"
)

// demoMariaDB is the demo's throwaway MariaDB, beside its PostgreSQL when
// the server programs are installed: a fresh data directory in a
// temporary directory, TCP on loopback only and only over TLS with a
// server certificate from the db CA, client certificates of the db-client
// CA, and the general log on (the statement log the audit trail can be
// checked against).
type demoMariaDB struct {
	demoServer // Dir holds the data, the socket and TLS files
	Port       int
	// LogFile is the general log (every statement); it is kept.
	LogFile string
	socket  string
}

// mariadbPrograms finds the server and the program that makes its data
// directory: MariaDB's names, else MySQL-compatible ones the MariaDB
// packages also install.
func mariadbPrograms() (server, installDB string, err error) {
	find := func(names ...string) string {
		for _, n := range names {
			for _, d := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
				if p := filepath.Join(d, n); isExecutable(p) {
					return p
				}
			}
			if p, err := exec.LookPath(n); err == nil {
				return p
			}
		}
		return ""
	}
	server = find("mariadbd", "mysqld")
	installDB = find("mariadb-install-db", "mysql_install_db")
	if server == "" || installDB == "" {
		return "", "", errors.New("MariaDB server programs (mariadbd and mariadb-install-db) not found: install the mariadb-server package for a demo MariaDB")
	}
	return server, installDB, nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// mariadbDemoOptions keep the server small and quick; the data directory
// and the server must agree on the redo log size.
var mariadbDemoOptions = []string{
	"--innodb-log-file-size=8M",
	"--innodb-buffer-pool-size=32M",
	"--innodb-flush-log-at-trx-commit=0",
	"--innodb-doublewrite=0",
	"--innodb-use-native-aio=0", // containers often cap io_setup
}

// startDemoMariaDB makes the data directory and starts the server; port 0
// picks a free one. The general log goes to logFile (appended to).
func startDemoMariaDB(ctx context.Context, cas *ca.Authorities, port int, logFile string) (m *demoMariaDB, err error) {
	server, installDB, err := mariadbPrograms()
	if err != nil {
		return nil, err
	}
	// A short path: the socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "tollgate-demo-mariadb-")
	if err != nil {
		return nil, err
	}
	m = &demoMariaDB{LogFile: logFile, socket: filepath.Join(dir, "mariadbd.sock")}
	m.demoServer = newDemoServer("mariadbd", dir, syscall.SIGTERM, m.errTail)
	defer func() {
		if err != nil {
			_ = m.Stop()
		}
	}()
	if _, err := cas.WriteDBFiles(filepath.Join(dir, "server"), []string{"localhost", "127.0.0.1"}, 0); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	common := []string{"--no-defaults"}
	// mariadbd runs as root only when told so; as anyone else it runs as
	// that user.
	if os.Geteuid() == 0 {
		common = append(common, "--user=root")
	}
	install := append(append([]string{}, common...), "--datadir="+data, "--auth-root-authentication-method=normal",
		"--skip-test-db", "--skip-name-resolve")
	ictx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	ic := exec.CommandContext(ictx, installDB, append(install, mariadbDemoOptions...)...)
	ic.Dir = dir
	ic.Env = mariadbDemoEnv()
	if out, err := ic.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", filepath.Base(installDB), err, lastLines(string(out), 5))
	}
	if port == 0 {
		if port, err = freeTCPPort(); err != nil {
			return nil, err
		}
	}
	m.Port = port
	args := append(append([]string{}, common...),
		"--datadir="+data,
		"--tmpdir="+dir,
		"--pid-file="+filepath.Join(dir, "mariadbd.pid"),
		"--socket="+m.socket,
		"--bind-address=127.0.0.1",
		"--port="+strconv.Itoa(port),
		"--skip-name-resolve",
		"--ssl-cert="+filepath.Join(dir, "server.crt"),
		"--ssl-key="+filepath.Join(dir, "server.key"),
		"--ssl-ca="+filepath.Join(dir, "server.cas"),
		"--require-secure-transport=ON",
		"--general-log=1",
		"--general-log-file="+logFile,
		"--log-output=FILE",
		"--max-connections=50",
		"--lc-messages=en_US",
	)
	args = append(args, mariadbDemoOptions...)
	errFile, err := os.OpenFile(filepath.Join(dir, "mariadbd.err"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer errFile.Close()
	cmd := exec.Command(server, args...)
	cmd.Dir = dir
	cmd.Env = mariadbDemoEnv()
	cmd.Stdout, cmd.Stderr = errFile, errFile
	if err := m.start(cmd, nil); err != nil {
		return nil, err
	}
	if err := m.waitReady(ctx, 60*time.Second, func() error { return m.Exec(ctx, "SELECT 1") }); err != nil {
		return nil, err
	}
	return m, nil
}

func mariadbDemoEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "LANG=C", "TZ=UTC"}
}

// adminDSN connects as root over the private socket.
func (m *demoMariaDB) adminDSN() string {
	c := mysql.NewConfig()
	c.User, c.Net, c.Addr = "root", "unix", m.socket
	return c.FormatDSN()
}

func (m *demoMariaDB) errTail() string {
	b, _ := os.ReadFile(filepath.Join(m.Dir, "mariadbd.err"))
	return lastLines(string(b), 5)
}

// Exec runs statements as root.
func (m *demoMariaDB) Exec(ctx context.Context, stmts ...string) error {
	db, err := sql.Open("mysql", m.adminDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	for _, s := range stmts {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := db.ExecContext(cctx, s)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
