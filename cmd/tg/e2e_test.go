package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/schemas"
	"github.com/tollgate-db/tollgate/test/harness"
)

const password = "correct horse battery staple"

// e2e is a broker running in this test process (embedded NATS listening on
// loopback, state, CAs, API), the built tg and tollgate binaries, and a
// configuration file that points the admin commands at that broker.
type e2e struct {
	t        *testing.T
	dir      string
	cfgFile  string
	tg, tgl  string
	home     string
	b        *daemon.Broker
	js       jetstream.JetStream
	pub      *events.Publisher
	proxy    string
	extraEnv []string
	// lastURL is the URL withBrowser opened last.
	lastURL string
}

func startE2E(t *testing.T) *e2e { return startE2EAt(t, "") }

// startE2EAt is startE2E with the proxy's public address on host (its
// loopback port): security keys need a host name, not an IP address.
func startE2EAt(t *testing.T, host string) *e2e {
	e := &e2e{t: t, dir: t.TempDir(), home: t.TempDir()}
	bin := t.TempDir()
	out, err := exec.Command("go", "build", "-o", bin+string(os.PathSeparator), ".", "../tollgate").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	e.tg, e.tgl = filepath.Join(bin, "tg"), filepath.Join(bin, "tollgate")

	// The embedded server as tollgate start runs it, its identities in
	// the data dir where the admin commands find them.
	ncfg := config.Default()
	ncfg.DataDir = e.dir
	ncfg.NATS.Embedded.StoreDir = filepath.Join(e.dir, "nats")
	ncfg.NATS.Embedded.Listen = "127.0.0.1:0"
	so, err := natsserver.FromConfig(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsserver.Start(so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.ConnectAs(natsserver.Broker)
	if err != nil {
		t.Fatal(err)
	}
	if e.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := events.EnsureStreams(ctx, e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if e.pub, err = events.NewPublisher(e.js, config.DefaultCluster); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = ln.Addr().String()
	if host != "" {
		_, port, _ := net.SplitHostPort(e.proxy)
		e.proxy = net.JoinHostPort(host, port)
	}
	yaml := fmt.Sprintf("data_dir: %s\nnats:\n  embedded:\n    listen: %s\n    store_dir: %s\nproxy:\n  listen: %s\n  public_addr: %s\n",
		e.dir, srv.NATSServer().Addr(), filepath.Join(e.dir, "nats"), e.proxy, e.proxy)
	e.cfgFile = filepath.Join(t.TempDir(), "tollgate.yaml")
	if err := os.WriteFile(e.cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(e.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	if e.b, err = daemon.Start(ctx, daemon.Options{Config: cfg, JS: e.js, Audit: e.pub, Listener: ln}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := e.b.Wait(); err != nil {
			t.Errorf("broker: %v", err)
		}
	})
	return e
}

// run runs a binary with HOME set to the test's, and returns stdout and
// stderr; wantErr says whether it must fail.
func (e *e2e) run(wantErr bool, stdin string, bin string, args ...string) (string, string) {
	e.t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"HOME=" + e.home, "PATH=" + os.Getenv("PATH"), "TOLLGATE_CONFIG=" + e.cfgFile}, e.extraEnv...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	name := filepath.Base(bin) + " " + strings.Join(args, " ")
	if wantErr && err == nil {
		e.t.Fatalf("%s: succeeded, want an error\nstdout: %s", name, stdout.String())
	}
	if !wantErr && err != nil {
		e.t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", name, err, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String()
}

func mustContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Fatalf("%s: %q not found in:\n%s", what, w, got)
		}
	}
}

// lineOf is the first line of out that contains s.
func lineOf(out, s string) string {
	for l := range strings.Lines(out) {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

func modeOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestEndToEnd: a user added with `tollgate users add` logs in with `tg
// login` and the printed invite, sees their roles with `tg status` and a
// registered database with `tg db ls`; admin commands work locally and
// remotely with an editor identity; `tollgate auth sign --format=db` files
// serve a real PostgreSQL that a db-client certificate logs in to.
func TestEndToEnd(t *testing.T) {
	e := startE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	out, _ := e.run(false, "", e.tgl, "users", "add", "alice", "--roles=access", "--db-users=*", "--db-names=*")
	mustContain(t, "users add", out, "user alice added: roles access; db_names *; db_users *", "invite (single use, valid until")
	m := regexp.MustCompile(`(?m)^\s*(tg login --proxy=(\S+) --user=alice --invite=(\S+) --ca-pin=(sha256:[0-9a-f]{64}))$`).FindStringSubmatch(out)
	if m == nil || m[2] != e.proxy {
		t.Fatalf("no tg login command for %s in:\n%s", e.proxy, out)
	}
	loginArgs := strings.Fields(m[1])[1:]
	invite, pin := m[3], m[4]
	if want, _ := e.b.Admin.HostCAPin(); pin != want {
		t.Fatalf("pin %s, host CA %s", pin, want)
	}
	if _, err := e.b.Store.RegisterDatabase(ctx, daemon.Actor, state.NewDatabase{Name: "pg-main", Protocol: "postgres",
		URI: "127.0.0.1:5432", Labels: map[string]string{"env": "prod", "team": "core"}, HostID: "agent-1"}); err != nil {
		t.Fatal(err)
	}

	// Without the pin and without a terminal, tg refuses to trust the
	// proxy and says which fingerprint to check.
	e.extraEnv = []string{"TG_PASSWORD=" + password}
	_, errOut := e.run(true, "", e.tg, "login", "--proxy="+e.proxy, "--user=alice", "--invite="+invite)
	mustContain(t, "login without pin", errOut, "is not trusted yet", "--ca-pin="+pin)
	// A wrong pin is refused before anything is sent.
	_, errOut = e.run(true, "", e.tg, "login", "--proxy="+e.proxy, "--user=alice", "--invite="+invite, "--ca-pin=sha256:"+strings.Repeat("ab", 32))
	mustContain(t, "login with a wrong pin", errOut, "the connection may be intercepted")

	out, _ = e.run(false, "", e.tg, loginArgs...)
	mustContain(t, "tg login", out, "logged in as alice (roles access) at "+e.proxy)
	tgDir := filepath.Join(e.home, ".tg")
	if p := modeOf(t, tgDir); p != 0o700 {
		t.Fatalf("~/.tg mode %04o", p)
	}
	for _, f := range []string{"identity", "known_proxies"} {
		if p := modeOf(t, filepath.Join(tgDir, f)); p != 0o600 {
			t.Fatalf("~/.tg/%s mode %04o", f, p)
		}
	}
	idf, err := identity.LoadFile(filepath.Join(tgDir, "identity"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.CAs.VerifyUser([]*x509.Certificate{idf.Cert.Leaf}); err != nil {
		t.Fatalf("stored certificate: %v", err)
	}

	out, _ = e.run(false, "", e.tg, "status")
	mustContain(t, "tg status", out, "alice", "roles:", "access", "db_names=*; db_users=*", "proxy:", e.proxy, "expires:", pin)
	out, _ = e.run(false, "", e.tg, "db", "ls")
	mustContain(t, "tg db ls", out, "NAME", "LABELS", "STATUS", "pg-main", "postgres", "env=prod,team=core", "127.0.0.1:5432")
	mustContain(t, "tg db ls", lineOf(out, "pg-main"), "online")

	// A database whose agent is reached through the proxy is online only
	// while some proxy holds its tunnel (a route in presence), whatever
	// its heartbeats say.
	if _, err := e.b.Store.RegisterDatabase(ctx, daemon.Actor, state.NewDatabase{Name: "pg-behind", Protocol: "postgres",
		URI: "10.0.0.9:5432", HostID: "agent-2", AgentAddr: e.proxy}); err != nil {
		t.Fatal(err)
	}
	out, _ = e.run(false, "", e.tg, "db", "ls")
	mustContain(t, "tg db ls, no tunnel", lineOf(out, "pg-behind"), "offline")
	out, _ = e.run(false, "", e.tgl, "db", "ls")
	mustContain(t, "tollgate db ls, no tunnel", lineOf(out, "pg-behind"), "offline")
	ann := presence.NewAnnouncer(e.b.PresenceKV, "proxy-e2e", "192.0.2.1:3080", 0, nil)
	ann.Add(ctx, "pg-behind", "agent-2")
	out, _ = e.run(false, "", e.tg, "db", "ls")
	mustContain(t, "tg db ls, a tunnel", lineOf(out, "pg-behind"), "online")
	out, _ = e.run(false, "", e.tgl, "db", "ls")
	mustContain(t, "tollgate db ls, a tunnel", lineOf(out, "pg-behind"), "online", "proxy-e2e")
	// tg goes through the proxy it logged in to, whichever proxy the
	// agent registered with or holds its tunnel: the service entry names
	// the login's proxy.
	if _, err := e.b.Store.RegisterDatabase(ctx, daemon.Actor, state.NewDatabase{Name: "pg-far", Protocol: "postgres",
		URI: "10.0.0.10:5432", HostID: "agent-3", AgentAddr: "192.0.2.1:3080"}); err != nil {
		t.Fatal(err)
	}
	ann.Add(ctx, "pg-far", "agent-3")
	out, _ = e.run(false, "", e.tg, "db", "login", "pg-far")
	proxyHost, proxyPort, _ := net.SplitHostPort(e.proxy)
	mustContain(t, "tg db login, through the proxy", out, "export PGHOST=pg-far", "export PGHOSTADDR="+proxyHost, "export PGPORT="+proxyPort)
	_, errOut = e.run(true, "", e.tg, "db", "connect", "pg-behind-nosuch")
	mustContain(t, "tg db connect, unknown", errOut, "pg-behind-nosuch")
	ann.Remove(ctx, "pg-behind", "agent-2")
	_, errOut = e.run(true, "", e.tg, "proxy", "db", "pg-behind", "--tunnel")
	mustContain(t, "tg proxy db, offline", errOut, "database pg-behind is offline: no agent connected")

	// Later logins: no invite, the proxy pinned in known_proxies, the
	// password on standard input.
	e.extraEnv = nil
	_, errOut = e.run(true, "not the password at all\n", e.tg, "login")
	mustContain(t, "wrong password", errOut, "login failed: wrong user name or password")
	out, _ = e.run(false, password+"\n", e.tg, "login", "--ttl=1h")
	mustContain(t, "second login", out, "logged in as alice")

	// Admin commands on the daemon's data dir.
	out, _ = e.run(false, "", e.tgl, "users", "ls")
	mustContain(t, "users ls", out, "alice", "access", "set")
	roleFile := filepath.Join(t.TempDir(), "dev.yaml")
	if err := os.WriteFile(roleFile, []byte("kind: role\nmetadata: {name: dev, description: developers}\nspec:\n  allow:\n    db_labels: {env: dev}\n    db_users: [app]\n    db_names: ['*']\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ = e.run(false, "", e.tgl, "roles", "create", "-f", roleFile)
	mustContain(t, "roles create", out, "role dev created")
	out, _ = e.run(false, "", e.tgl, "roles", "ls")
	mustContain(t, "roles ls", out, "dev", "developers", "editor", "labels env=dev")
	out, errOut = e.run(false, "", e.tgl, "tokens", "add", "--type=db", "--ttl=10m")
	if tok := strings.TrimSpace(out); !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(tok) {
		t.Fatalf("tokens add printed %q", out)
	}
	mustContain(t, "tokens add", errOut, "single use", "join_token:")
	out, _ = e.run(false, "", e.tgl, "db", "ls")
	mustContain(t, "tollgate db ls", out, "pg-main", "postgres", "env=prod,team=core", "127.0.0.1:5432", "online")
	_, errOut = e.run(true, "", e.tgl, "users", "add", "bob", "--roles=nosuch")
	mustContain(t, "unknown role", errOut, "unknown role nosuch")

	// auth sign --format=identity without --roles takes the user's roles
	// and traits from the state; tg -i uses the file.
	idPath := filepath.Join(t.TempDir(), "alice.identity")
	e.run(false, "", e.tgl, "auth", "sign", "--format=identity", "--user=alice", "--out="+idPath, "--ttl=1h")
	out, _ = e.run(false, "", e.tg, "-i", idPath, "status")
	mustContain(t, "tg -i status", out, "alice", "access", "db_names=*; db_users=*")
	out, _ = e.run(false, "", e.tg, "-i", idPath, "db", "ls")
	mustContain(t, "tg -i db ls", out, "pg-main")
	devPath := filepath.Join(t.TempDir(), "dev.identity")
	e.run(false, "", e.tgl, "auth", "sign", "--format=identity", "--user=dana", "--roles=dev", "--out="+devPath, "--ttl=1h")
	out, errOut = e.run(false, "", e.tg, "-i", devPath, "db", "ls")
	if out != "" {
		t.Fatalf("tg db ls with nothing allowed printed %q", out)
	}
	mustContain(t, "tg db ls with nothing allowed", errOut, "none that your roles (dev) allow", "tg request create")

	// A remote admin with an editor identity file, over the API.
	opsPath := filepath.Join(t.TempDir(), "ops.identity")
	e.run(false, "", e.tgl, "auth", "sign", "--format=identity", "--user=ops", "--roles=editor", "--out="+opsPath, "--ttl=1h")
	out, _ = e.run(false, "", e.tgl, "--identity", opsPath, "users", "add", "bob", "--roles=dev")
	mustContain(t, "remote users add", out, "user bob added", "--user=bob")
	out, _ = e.run(false, "", e.tgl, "--identity", opsPath, "users", "ls", "--format=json")
	var users []struct{ Name string }
	if err := json.Unmarshal([]byte(out), &users); err != nil || len(users) != 2 {
		t.Fatalf("remote users ls: %v\n%s", err, out)
	}
	_, errOut = e.run(true, "", e.tgl, "--identity", idPath, "users", "ls")
	mustContain(t, "users ls as a non-editor", errOut, "needs the editor role")
	out, _ = e.run(false, "", e.tgl, "--identity", opsPath, "users", "rm", "bob")
	mustContain(t, "remote users rm", out, "user bob removed")

	// Logout forgets the key; the pin stays.
	out, _ = e.run(false, "", e.tg, "logout")
	mustContain(t, "logout", out, "logged out alice")
	if _, err := os.Stat(filepath.Join(tgDir, "identity")); !os.IsNotExist(err) {
		t.Fatalf("identity still there after logout: %v", err)
	}
	_, errOut = e.run(true, "", e.tg, "status")
	mustContain(t, "status after logout", errOut, "not logged in")

	// Every login and certificate above is in AUDIT, valid per schema.
	e.checkAudit(ctx, "alice")

	// The database side: auth sign --format=db files in a real PostgreSQL,
	// which a db-client certificate (what an agent presents) logs in to.
	e.postgres(ctx)
}

func (e *e2e) checkAudit(ctx context.Context, user string) {
	t := e.t
	if err := e.pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := e.js.Stream(ctx, events.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(m.Data, []byte(password)) {
			t.Errorf("AUDIT %d holds the password", seq)
		}
		// A frame of events or one event on its own.
		err = events.SplitEvents(m.Data, func(data []byte) error {
			if err := schemas.Validate(data); err != nil {
				t.Errorf("AUDIT %d: %v\n%s", seq, err, data)
			}
			var ev struct {
				Type, User, Reason, Method, UserAgent string `json:"-"`
			}
			var raw map[string]any
			_ = json.Unmarshal(data, &raw)
			ev.Type, _ = raw["type"].(string)
			ev.User, _ = raw["user"].(string)
			ev.Reason, _ = raw["reason"].(string)
			ev.Method, _ = raw["method"].(string)
			ev.UserAgent, _ = raw["user_agent"].(string)
			if ev.User == user && ev.Type == "user.login" {
				counts[ev.Method+"/"+fmt.Sprint(raw["success"])+"/"+ev.Reason]++
				if ev.UserAgent != "tg/1" {
					t.Errorf("login event without tg's user agent: %s", data)
				}
			}
			if ev.Type == "cert.issue" && raw["subject"] == user {
				counts["cert.issue/"+raw["purpose"].(string)]++
			}
			return nil
		})
		if err != nil {
			t.Errorf("AUDIT %d: %v", seq, err)
		}
	}
	for k, n := range map[string]int{"invite/true/": 1, "password/true/": 1, "password/false/wrong_password": 1,
		"cert.issue/login": 2, "cert.issue/sign": 1} {
		if counts[k] != n {
			t.Errorf("AUDIT: %d × %s for %s, want %d (all: %v)", counts[k], k, user, n, counts)
		}
	}
}

func (e *e2e) postgres(ctx context.Context) {
	t := e.t
	cdir := t.TempDir()
	prefix := filepath.Join(cdir, "server")
	e.run(false, "", e.tgl, "auth", "sign", "--format=db", "--host=localhost,127.0.0.1", "--out="+prefix, "--ttl=24h")
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if p := modeOf(t, prefix+".key"); p != 0o600 {
		t.Fatalf("server.key mode %04o", p)
	}
	dbCA, _ := e.run(false, "", e.tgl, "auth", "export", "--type=db")
	dbClientCA, _ := e.run(false, "", e.tgl, "auth", "export", "--type=db-client")
	dbCAFile := filepath.Join(cdir, "db-ca.crt")
	if err := os.WriteFile(dbCAFile, []byte(dbCA), 0o644); err != nil {
		t.Fatal(err)
	}
	pg := harness.PostgresWith(t, harness.PostgresOptions{
		TLS:   harness.TLSOptions{ClientCA: read(prefix + ".cas"), ServerCert: read(prefix + ".crt"), ServerKey: read(prefix + ".key"), ServerCA: []byte(dbCA)},
		Users: []string{"alice"},
	})

	// The agent's side: a db-client certificate for db user alice, whose
	// chain validates against the exported db-client CA.
	cas, err := ca.Open(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cc, certPEM, err := cas.IssueDBClient(k.Public(), "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(dbClientCA)) {
		t.Fatal("db-client CA export is not PEM")
	}
	if _, err := cc.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("db-client chain: %v", err)
	}
	if !bytes.Equal(read(prefix+".cas"), []byte(dbClientCA)) {
		t.Fatal("server.cas is not the db-client CA")
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	crt, key := filepath.Join(cdir, "alice.crt"), filepath.Join(cdir, "alice.key")
	if err := os.WriteFile(crt, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("host=localhost port=%d user=alice dbname=postgres sslmode=verify-full sslrootcert=%s sslcert=%s sslkey=%s connect_timeout=5",
		pg.Port(), dbCAFile, crt, key)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("PostgreSQL with the auth sign --format=db files: %v", err)
	}
	defer conn.Close(ctx)
	var who string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&who); err != nil || who != "alice" {
		t.Fatalf("current_user %q: %v", who, err)
	}
}
