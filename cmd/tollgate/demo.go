package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/protocol"
)

// Names the demo creates.
const (
	demoDatabase    = "demo-postgres"
	demoMariaDBName = "demo-mariadb"
	demoRedisName   = "demo-redis"
	// demoRedisDB is the logical database the demo user may select (a
	// Redis db_name is a number).
	demoRedisDB = "0"
	demoUser    = "demo"
	demoDBName  = "demo"
)

type demoFlags struct {
	nats, proxy, agent             string
	pgPort, mariadbPort, redisPort int
	noMariaDB, noRedis             bool
}

func init() {
	var f demoFlags
	c := &cobra.Command{
		Use:   "demo [--data-dir=DIR]",
		Short: "Everything in one process with a throwaway PostgreSQL (and MariaDB, Redis), a demo user and its identity file",
		Long: `Run NATS (embedded), the broker and an agent in one process, as tollgate start
does, plus a throwaway PostgreSQL started from the installed server programs,
and a throwaway MariaDB when mariadbd and mariadb-install-db are installed
(--no-mariadb leaves it out), and a throwaway Redis when redis-server is
installed (--no-redis leaves it out). They are registered as demo-postgres,
demo-mariadb and demo-redis; PostgreSQL and MariaDB each have a database user
and a database both called demo, Redis an ACL user demo; each trusts
Tollgate's db-client CA for certificate logins only. The Tollgate user demo
(role access, db_users demo, db_names demo, postgres and 0, Redis's first
logical database) gets an identity file in the data dir.

The demo prints one command per database, which opens psql, mariadb or
redis-cli through Tollgate, and one that follows the audit events. Ctrl-C stops
everything and removes the throwaway databases; the data dir (default
./tollgate-demo) is kept: it holds the audit events (read them with the
printed tail command without --follow), the CAs, the identity file, the
written configuration tollgate.yaml, and postgres.log and mariadb.log, the
databases' own statement logs. A later demo on the same data dir reuses
them with fresh databases.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if flagConfig != "" {
				return errors.New("tollgate demo writes its own configuration into the data dir; choose the directory with --data-dir, not --config")
			}
			// Any ending removes the throwaway database: Ctrl-C, a kill, the
			// terminal closing. Output through a pipe that closed (make run
			// | tee log, Ctrl-C ending tee first) must not kill the process
			// before it cleaned up, so writes to it fail instead.
			signal.Ignore(syscall.SIGPIPE)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			return runDemo(ctx, f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.nats, "nats-listen", fmt.Sprintf("127.0.0.1:%d", config.DefaultNATSPort), "embedded NATS client address")
	fl.StringVar(&f.proxy, "proxy-listen", config.DefaultProxyAddr, "broker API (proxy) address")
	fl.StringVar(&f.agent, "agent-listen", config.DefaultAgentAddr, "agent address")
	fl.IntVar(&f.pgPort, "pg-port", 0, "port of the throwaway PostgreSQL (0: any free port)")
	fl.IntVar(&f.mariadbPort, "mariadb-port", 0, "port of the throwaway MariaDB (0: any free port)")
	fl.BoolVar(&f.noMariaDB, "no-mariadb", false, "no throwaway MariaDB, even when its server programs are installed")
	fl.IntVar(&f.redisPort, "redis-port", 0, "port of the throwaway Redis (0: any free port)")
	fl.BoolVar(&f.noRedis, "no-redis", false, "no throwaway Redis, even when redis-server is installed")
	root.AddCommand(c)

	addStartRole(startRole{
		Name:    "demo",
		Enabled: func(*config.Config) bool { return activeDemo != nil },
		Run: func(ctx context.Context, d *startDeps) error {
			return activeDemo.run(ctx, d)
		},
	})
}

// activeDemo is set while `tollgate demo` runs, which enables the demo
// role of the daemon: it waits for the broker and agent, creates the demo
// user and identity file, and prints the commands.
var activeDemo *demoRun

type demoRun struct {
	cfg      *config.Config
	cfgFile  string
	identity string
	out      io.Writer
}

func runDemo(ctx context.Context, f demoFlags, stdout, stderr io.Writer) error {
	dataDir := flagDataDir
	if dataDir == "" {
		dataDir = "tollgate-demo"
	}
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	// Before the throwaway PostgreSQL starts: a port in use fails at once.
	addrs := []listenAddr{
		{addr: f.nats, flag: "--nats-listen"},
		{addr: f.proxy, flag: "--proxy-listen"},
		{addr: f.agent, flag: "--agent-listen"},
	}
	if f.pgPort != 0 {
		addrs = append(addrs, listenAddr{addr: fmt.Sprintf("127.0.0.1:%d", f.pgPort), flag: "--pg-port"})
	}
	if f.mariadbPort != 0 && !f.noMariaDB {
		addrs = append(addrs, listenAddr{addr: fmt.Sprintf("127.0.0.1:%d", f.mariadbPort), flag: "--mariadb-port"})
	}
	if f.redisPort != 0 && !f.noRedis {
		addrs = append(addrs, listenAddr{addr: fmt.Sprintf("127.0.0.1:%d", f.redisPort), flag: "--redis-port"})
	}
	if err := checkListenAddrs(addrs, ""); err != nil {
		return err
	}
	cas, err := ca.Open(dataDir)
	if err != nil {
		return err
	}
	// What takes time on a first start is said before it is done, so a
	// newcomer never watches a silent terminal.
	pgLog := filepath.Join(dataDir, "postgres.log")
	log.Info("starting a throwaway PostgreSQL (initdb takes a few seconds)", "data_dir", dataDir)
	pg, err := startDemoPostgres(ctx, cas, f.pgPort, pgLog)
	if err != nil {
		return fmt.Errorf("throwaway PostgreSQL: %w", err)
	}
	defer func() {
		if err := pg.Stop(); err != nil {
			log.Error("stopping the throwaway PostgreSQL", "err", err)
		} else {
			log.Info("throwaway PostgreSQL stopped and removed", "statement_log", pgLog)
		}
	}()
	if err := pg.Exec(ctx, "postgres", "CREATE ROLE "+demoUser+" LOGIN", "CREATE DATABASE "+demoDBName+" OWNER "+demoUser); err != nil {
		return fmt.Errorf("throwaway PostgreSQL: %w", err)
	}
	log.Info("throwaway PostgreSQL running", "addr", fmt.Sprintf("127.0.0.1:%d", pg.Port), "dir", pg.Dir, "statement_log", pgLog)

	mariadbPort := 0
	if f.noMariaDB {
		log.Info("no throwaway MariaDB: --no-mariadb")
	} else if _, _, err := mariadbPrograms(); err != nil {
		log.Info("no throwaway MariaDB", "why", err.Error())
	} else {
		mLog := filepath.Join(dataDir, "mariadb.log")
		log.Info("starting a throwaway MariaDB (mariadb-install-db takes a few seconds)")
		m, err := startDemoMariaDB(ctx, cas, f.mariadbPort, mLog)
		if err != nil {
			return fmt.Errorf("throwaway MariaDB: %w (--no-mariadb runs the demo without it)", err)
		}
		defer func() {
			if err := m.Stop(); err != nil {
				log.Error("stopping the throwaway MariaDB", "err", err)
			} else {
				log.Info("throwaway MariaDB stopped and removed", "statement_log", mLog)
			}
		}()
		// The agent logs in with a db-client certificate whose subject is
		// the database user: no password.
		if err := m.Exec(ctx, "CREATE DATABASE "+demoDBName,
			"CREATE USER '"+demoUser+"'@'%' REQUIRE SUBJECT '/CN="+demoUser+"'",
			"GRANT ALL ON "+demoDBName+".* TO '"+demoUser+"'@'%'"); err != nil {
			return fmt.Errorf("throwaway MariaDB: %w", err)
		}
		mariadbPort = m.Port
		log.Info("throwaway MariaDB running", "addr", fmt.Sprintf("127.0.0.1:%d", m.Port), "dir", m.Dir, "statement_log", mLog)
	}

	redisPort := 0
	if f.noRedis {
		log.Info("no throwaway Redis: --no-redis")
	} else if _, err := redisServerProgram(); err != nil {
		log.Info("no throwaway Redis", "why", err.Error())
	} else {
		r, err := startDemoRedis(ctx, cas, f.redisPort, demoUser)
		if err != nil {
			return fmt.Errorf("throwaway Redis: %w (--no-redis runs the demo without it)", err)
		}
		defer func() {
			if err := r.Stop(); err != nil {
				log.Error("stopping the throwaway Redis", "err", err)
			} else {
				log.Info("throwaway Redis stopped and removed")
			}
		}()
		redisPort = r.Port
		log.Info("throwaway Redis running", "addr", fmt.Sprintf("127.0.0.1:%d", r.Port), "dir", r.Dir)
	}

	cfgFile := filepath.Join(dataDir, "tollgate.yaml")
	if err := os.WriteFile(cfgFile, []byte(demoConfig(dataDir, f, pg.Port, mariadbPort, redisPort)), 0o600); err != nil {
		return err
	}
	cfg, err := startConfig(cfgFile, "")
	if err != nil {
		return fmt.Errorf("demo configuration %s: %w", cfgFile, err)
	}
	activeDemo = &demoRun{cfg: cfg, cfgFile: cfgFile, identity: filepath.Join(dataDir, "demo.identity"), out: stdout}
	defer func() { activeDemo = nil }()
	log.Info("starting NATS, the broker and the agent", "config", cfgFile)
	return runStart(ctx, cfg, log)
}

// demoConfig is the configuration the demo runs with, written to the data
// dir so that admin commands (audit tail) find the same servers.
func demoConfig(dataDir string, f demoFlags, pgPort, mariadbPort, redisPort int) string {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	db := func(name, what, proto string, port int) string {
		if port == 0 {
			return ""
		}
		return fmt.Sprintf(`    - name: %s
      description: throwaway %s of tollgate demo
      protocol: %s
      uri: %s
      static_labels:
        env: demo
      tls:
        mode: verify-full
`, name, what, proto, q(fmt.Sprintf("127.0.0.1:%d", port)))
	}
	others := db(demoMariaDBName, "MariaDB", "mysql", mariadbPort) + db(demoRedisName, "Redis", "redis", redisPort)
	return fmt.Sprintf(`# Written by tollgate demo; rewritten at every demo start.
cluster_name: tollgate
data_dir: %s
nats:
  embedded:
    listen: %s
proxy:
  listen: %s
db_service:
  listen: %s
  databases:
    - name: %s
      description: throwaway PostgreSQL of tollgate demo
      protocol: postgres
      uri: %s
      static_labels:
        env: demo
      tls:
        mode: verify-full
%s`, q(dataDir), q(f.nats), q(f.proxy), q(f.agent), demoDatabase, q(fmt.Sprintf("127.0.0.1:%d", pgPort)), others)
}

// run is the demo role: once broker and agent are up, the demo user and
// its identity file, then the two commands.
func (r *demoRun) run(ctx context.Context, d *startDeps) error {
	store, err := d.BrokerStore(ctx)
	if err != nil {
		return err
	}
	cas, err := ca.Open(r.cfg.DataDir)
	if err != nil {
		return err
	}
	// The agent registers the databases once it listens; the broker's API
	// answers once its listener is up.
	for _, want := range r.cfg.DBService.Databases {
		if err := waitFor(ctx, 60*time.Second, "the agent to register "+want.Name, func() bool {
			db, ok := store.Database(want.Name)
			return ok && !db.Expired(time.Now()) && db.URI == want.URI
		}); err != nil {
			return err
		}
	}
	if err := waitFor(ctx, 60*time.Second, "the broker API at "+r.cfg.Proxy.Listen, func() bool {
		c, err := net.DialTimeout("tcp", r.cfg.Proxy.Listen, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		return err
	}
	actor := state.Actor{User: "tollgate:demo", Roles: []string{access.RoleEditor}}
	traits := map[string][]string{identity.TraitDBUsers: {demoUser}, identity.TraitDBNames: {demoDBName, "postgres", demoRedisDB}}
	roles := []string{access.RoleAccess}
	if _, err := store.CreateUser(ctx, actor, state.NewUser{Name: demoUser, Roles: roles, Traits: traits}); errors.Is(err, state.ErrExists) {
		_, err = store.UpdateUser(ctx, actor, demoUser, func(u *state.User) error {
			u.Roles, u.Traits = roles, traits
			return nil
		})
		if err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if err := r.writeIdentity(ctx, store, cas, d); err != nil {
		return err
	}
	tg, tollgate := siblingCommand("tg"), siblingCommand("tollgate")
	var clients []string
	for _, db := range r.cfg.DBService.Databases {
		dbName := demoDBName
		if protocol.EngineOf(db.Protocol) == protocol.Redis {
			dbName = demoRedisDB
		}
		fmt.Fprintf(r.out, "%s -i %s db connect %s --db-user=%s --db-name=%s\n",
			tg, displayPath(r.identity), db.Name, demoUser, dbName)
		if c := protocol.Get(db.Protocol).Clients; len(c) > 0 {
			clients = append(clients, c[0])
		}
	}
	fmt.Fprintf(r.out, "%s --config=%s audit tail --follow\n", tollgate, displayPath(r.cfgFile))
	what := "the first command opens psql through Tollgate"
	if len(clients) > 1 {
		what = "the first commands open " + strings.Join(clients[:len(clients)-1], ", ") + " and " + clients[len(clients)-1] + " through Tollgate"
	}
	d.Log.Info("demo ready: " + what + ", the last follows their audit events; Ctrl-C stops the demo")
	<-ctx.Done()
	return nil
}

// writeIdentity signs the demo user's certificate (audited as any
// identity file) and writes the identity file.
func (r *demoRun) writeIdentity(ctx context.Context, store *state.Store, cas *ca.Authorities, d *startDeps) error {
	u, ok := store.User(demoUser)
	if !ok {
		return errors.New("demo user vanished")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	ls := login.New(store, cas, d.Publisher, login.Options{Log: d.Log})
	is, err := ls.SignUser(ctx, state.Actor{User: "tollgate:demo", Roles: []string{access.RoleEditor}},
		identity.Identity{User: u.Name, Roles: u.Roles, Traits: u.Traits}, key.Public(), 0, "tollgate demo")
	if err != nil {
		return err
	}
	var caCerts []*x509.Certificate
	for _, t := range []ca.Type{ca.User, ca.Host} {
		c, err := cas.Cert(t)
		if err != nil {
			return err
		}
		caCerts = append(caCerts, c)
	}
	file, err := identity.NewFile(r.cfg.Proxy.PublicAddr, key, is.Cert, caCerts)
	if err != nil {
		return err
	}
	return identity.WriteFile(r.identity, file)
}

func waitFor(ctx context.Context, timeout time.Duration, what string, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// siblingCommand is how to run a program installed beside this one (make
// build puts tg and tollgate in bin/): a path relative to the working
// directory when it lies below it, else absolute; the bare name when it is
// not there.
func siblingCommand(name string) string {
	exe, err := os.Executable()
	if err != nil {
		return name
	}
	p := filepath.Join(filepath.Dir(exe), name)
	if _, err := os.Stat(p); err != nil {
		return name
	}
	return displayPath(p)
}

// displayPath is p relative to the working directory when below it.
func displayPath(p string) string {
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	rel, err := filepath.Rel(wd, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || slices.Contains([]string{"", "."}, rel) {
		return p
	}
	if !strings.Contains(rel, "/") {
		// A bare name would be looked up in PATH.
		rel = "./" + rel
	}
	return rel
}
