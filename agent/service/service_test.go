package service_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/service"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/protocol"
	"github.com/tollgate-db/tollgate/test/harness"
)

type fixture struct {
	cfg   *config.Config
	cas   *ca.Authorities
	js    jetstream.JetStream
	pub   *events.Publisher
	pg    *harness.PostgresServer
	store *state.Store
}

// newFixture is a data dir with the CAs, a PostgreSQL whose server
// certificate comes from the db CA (so the agent's default trust, the db
// CA, verifies it) and which trusts the db-client CA, and JetStream.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	cas, err := ca.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, clientCA, err := cas.IssueDBServer([]string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dbCA, _ := cas.CertPEM(ca.DB)
	pg := harness.PostgresWith(t, harness.PostgresOptions{
		TLS:   harness.TLSOptions{ClientCA: clientCA, ServerCert: certPEM, ServerKey: keyPEM, ServerCA: dbCA},
		Users: []string{"app"},
	})
	ns := harness.NATS(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(js, "test", events.WithAckTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(context.Background()) })
	store, err := state.Open(ctx, js, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	cfg, err := config.Parse([]byte(`
cluster_name: test
db_service:
  listen: 127.0.0.1:0
  databases:
    - name: pg1
      protocol: postgres
      uri: ` + pg.Addr() + `
      static_labels: {env: test}
    - name: crdb
      protocol: cockroachdb
      uri: ` + pg.Addr() + `
      static_labels: {env: test, engine: crdb}
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = dir
	return &fixture{cfg: cfg, cas: cas, js: js, pub: pub, pg: pg, store: store}
}

func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.Default()
	}
	return slog.New(slog.DiscardHandler)
}

// userTLS is what a client presents to reach database name: a user
// certificate of the user CA, the database name as SNI, and the host CA as
// the only root.
func (f *fixture) userTLS(t *testing.T, name string, id identity.Identity) *tls.Config {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, _, err := f.cas.IssueUser(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := f.cas.Pool(ca.Host)
	return &tls.Config{
		ServerName:   protocol.ServerName(name),
		RootCAs:      roots,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}},
	}
}

// broker starts a broker on f's data dir (its CAs), listening on a free
// port, that stops with ctx.
func (f *fixture) broker(ctx context.Context, t *testing.T) *daemon.Broker {
	t.Helper()
	bcfg := config.Default()
	bcfg.ClusterName, bcfg.DataDir, bcfg.Proxy.Listen = "test", f.cfg.DataDir, "127.0.0.1:0"
	b, err := daemon.Start(ctx, daemon.Options{Config: bcfg, JS: f.js, Audit: f.pub, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// joiner is the configuration of an agent on another machine (its own
// data dir, no CAs, broker.enabled false) serving pg1, which joins b with
// tok, a fresh join token. The broker's CA pin is left to the caller.
func (f *fixture) joiner(ctx context.Context, t *testing.T, b *daemon.Broker) (config.Config, *api.AddTokenResponse) {
	t.Helper()
	tok, err := b.Admin.As(state.Actor{User: "admin"}, "test").AddToken(ctx, api.AddTokenRequest{Type: "db"})
	if err != nil {
		t.Fatal(err)
	}
	off := false
	acfg := *f.cfg
	acfg.DataDir = t.TempDir()
	acfg.Broker.Enabled = &off
	acfg.DBService.Databases = acfg.DBService.Databases[:1] // pg1
	acfg.DBService.BrokerAddr, acfg.DBService.JoinToken = b.Addr, tok.Value
	return acfg, tok
}

// connect opens a pgx connection to the agent over TLS from the first
// byte (no SSLRequest), as tg's tunnel does.
func connect(ctx context.Context, t *testing.T, addr string, tc *tls.Config, dbUser string) (*pgx.Conn, error) {
	t.Helper()
	pc, err := pgx.ParseConfig("host=127.0.0.1 port=1 sslmode=disable dbname=postgres user=" + dbUser)
	if err != nil {
		t.Fatal(err)
	}
	pc.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
		d := tls.Dialer{Config: tc}
		return d.DialContext(ctx, "tcp", addr)
	}
	return pgx.ConnectConfig(ctx, pc)
}

func TestServiceRegistersServesAndExpires(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ttl := 1500 * time.Millisecond
	s, err := service.Start(ctx, service.Options{Config: f.cfg, JS: f.js, Recorder: f.pub, Log: quiet(), HeartbeatTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.PublicAddr, "127.0.0.1:") || strings.HasSuffix(s.PublicAddr, ":0") || s.PublicAddr != s.Addr {
		t.Fatalf("public address %q, listening on %q", s.PublicAddr, s.Addr)
	}

	// Both databases are in the state with the agent's address, host and
	// labels; a second projection (the broker's) sees them.
	for _, name := range []string{"pg1", "crdb"} {
		d, ok := f.store.Database(name)
		for deadline := time.Now().Add(10 * time.Second); !ok && time.Now().Before(deadline); d, ok = f.store.Database(name) {
			time.Sleep(10 * time.Millisecond)
		}
		if !ok {
			t.Fatalf("database %s not registered", name)
		}
		if d.AgentAddr != s.PublicAddr || d.HostID != s.HostID || d.HeartbeatTTL != ttl || d.Labels["env"] != "test" || d.Expired(time.Now()) {
			t.Fatalf("registered %+v; agent %s %s", d, s.PublicAddr, s.HostID)
		}
	}
	crdb, _ := f.store.Database("crdb")
	if crdb.Protocol != "cockroachdb" || crdb.Labels["engine"] != "crdb" {
		t.Fatalf("crdb registered as %+v", crdb)
	}

	// Heartbeats keep coming: the last one moves past the first.
	first, _ := f.store.Database("pg1")
	waitUntil(t, 10*time.Second, "a later heartbeat", func() bool {
		d, _ := f.store.Database("pg1")
		return d.LastHeartbeat.After(first.LastHeartbeat)
	})

	// A session through each database, as the built-in access role with
	// the trait db_users allows; the cockroachdb database runs the same
	// engine against PostgreSQL.
	id := identity.Identity{User: "alice", Roles: []string{"access"},
		Traits: map[string][]string{identity.TraitDBUsers: {"app"}, identity.TraitDBNames: {"postgres"}}}
	for _, name := range []string{"pg1", "crdb"} {
		conn, err := connect(ctx, t, s.Addr, f.userTLS(t, name, id), "app")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var who string
		if err := conn.QueryRow(ctx, "select current_user || '@' || $1::text", name).Scan(&who); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if who != "app@"+name {
			t.Fatalf("%s: got %q", name, who)
		}
		conn.Close(ctx)
	}
	// A database user outside the traits is refused by the role.
	if _, err := connect(ctx, t, s.Addr, f.userTLS(t, "pg1", id), "postgres"); err == nil || !strings.Contains(err.Error(), "db_user") {
		t.Fatalf("db_user postgres: %v", err)
	}
	// An SNI naming no database of the agent: the certificate check
	// already fails, since the agent's certificate names only its
	// databases and its own addresses.
	if _, err := connect(ctx, t, s.Addr, f.userTLS(t, "other", id), "app"); err == nil || !strings.Contains(err.Error(), "certificate is valid for") {
		t.Fatalf("unknown database: %v", err)
	}

	starts := auditOfType(t, f.js, "db.session.start")
	protocols := map[string]bool{}
	for _, ev := range starts {
		if ev["success"] == true {
			protocols[ev["db_service"].(string)+"/"+ev["db_protocol"].(string)] = true
		}
	}
	if !protocols["pg1/postgres"] || !protocols["crdb/cockroachdb"] {
		t.Fatalf("session starts %v", protocols)
	}

	// Stopped, the agent sends no more heartbeats and its databases
	// expire.
	cancel()
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "pg1 to expire", func() bool {
		d, ok := f.store.Database("pg1")
		return ok && d.Expired(time.Now()) && len(f.store.LiveDatabases(time.Now())) == 0
	})
}

func TestServiceRestartKeepsHostAndReregistersAddress(t *testing.T) {
	f := newFixture(t)
	run := func(listen string) *service.Service {
		ctx, cancel := context.WithCancel(context.Background())
		cfg := *f.cfg
		cfg.DBService.Listen, cfg.DBService.PublicAddr = listen, ""
		s, err := service.Start(ctx, service.Options{Config: &cfg, JS: f.js, Recorder: f.pub, Log: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := s.Wait(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := run("127.0.0.1:0")
	b := run("127.0.0.1:0")
	if a.HostID == "" || a.HostID != b.HostID {
		t.Fatalf("host ids %q and %q: want the same from the data dir", a.HostID, b.HostID)
	}
	waitUntil(t, 10*time.Second, "the new address", func() bool {
		d, _ := f.store.Database("pg1")
		return d.AgentAddr == b.PublicAddr
	})
}

func TestServiceRefusesRemoteJoinAndEmptyConfig(t *testing.T) {
	f := newFixture(t)
	cfg := *f.cfg
	off := false
	cfg.Broker.Enabled = &off
	_, err := service.Start(context.Background(), service.Options{Config: &cfg, JS: f.js, Recorder: f.pub})
	if err == nil || !strings.Contains(err.Error(), "set db_service.broker_addr") {
		t.Fatalf("remote broker without an address: %v", err)
	}
	cfg.DBService.BrokerAddr, cfg.DBService.JoinToken = "broker.example:3080", "secret-token"
	_, err = service.Start(context.Background(), service.Options{Config: &cfg, JS: f.js, Recorder: f.pub})
	if err == nil || !strings.Contains(err.Error(), "db_service.broker_ca_pin") || strings.Contains(err.Error(), "secret-token") {
		t.Fatalf("remote join without a pin: %v", err)
	}
	cfg = *f.cfg
	cfg.DBService.Databases = nil
	if _, err := service.Start(context.Background(), service.Options{Config: &cfg, JS: f.js, Recorder: f.pub}); err == nil || !strings.Contains(err.Error(), "no databases") {
		t.Fatalf("no databases: %v", err)
	}
}

func TestEnabled(t *testing.T) {
	yes, no := true, false
	for _, c := range []struct {
		enabled *bool
		dbs     int
		want    bool
	}{{nil, 0, false}, {nil, 1, true}, {&yes, 0, true}, {&no, 1, false}} {
		cfg := config.Default()
		cfg.DBService.Enabled = c.enabled
		for range c.dbs {
			cfg.DBService.Databases = append(cfg.DBService.Databases, config.Database{Name: "x"})
		}
		if got := service.Enabled(cfg); got != c.want {
			t.Errorf("enabled %v with %d databases: %v, want %v", c.enabled, c.dbs, got, c.want)
		}
	}
}

func waitUntil(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// auditOfType returns the stored audit events of one type, each checked
// against its schema.
func auditOfType(t *testing.T, js jetstream.JetStream, typ string) []map[string]any {
	t.Helper()
	return agenttest.OfType(agenttest.Audit(t, js), typ)
}
