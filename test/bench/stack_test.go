package bench

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/postgres"
	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/proxy"
	"github.com/tollgate-db/tollgate/test/harness"
)

// benchUser is the database role every target logs in as.
const benchUser = "bench"

// stack is one PostgreSQL and every way of reaching it: directly, through
// the relay, pgbouncer, and two agents (strict and async audit) that share
// an embedded JetStream server, as the all-in-one process runs them.
type stack struct {
	dir     string
	pg      *harness.PostgresServer
	conns   map[string]Conn
	bouncer *Pgbouncer
	js      jetstream.JetStream
	// auditor reads AUDIT back, as `tollgate audit` does.
	auditor jetstream.JetStream
	// pubs are the audit publishers of the two agents.
	pubs map[string]*events.Publisher
	// auditSeq is the last AUDIT sequence counted, auditN the events
	// held up to it.
	auditSeq, auditN uint64
	// proxy is the public port the tunneled agent is reached through;
	// hostRoots and userPair are what a client needs to open sessions
	// through it (the idle-session measurement).
	proxy     *proxy.Server
	hostRoots *x509.CertPool
	userPair  tls.Certificate
}

func newStack(tb testing.TB, pgSettings map[string]string) *stack {
	tb.Helper()
	dir := tb.TempDir()
	s := &stack{dir: dir, conns: map[string]Conn{}, pubs: map[string]*events.Publisher{}}

	// Tollgate's authorities: the database trusts db-client, the agent
	// presents a host certificate, users hold user certificates.
	cas, err := ca.Open(filepath.Join(dir, "tollgate"))
	if err != nil {
		tb.Fatal(err)
	}
	dbClientPEM, err := cas.CertPEM(ca.DBClient)
	if err != nil {
		tb.Fatal(err)
	}
	// The other targets use certificates of a CA of their own, which the
	// database trusts too.
	benchCA := harness.NewCA(tb, "Tollgate benchmark CA")
	benchCAFile := agenttest.WriteFile(tb, dir, "bench-ca.crt", benchCA.CertPEM)
	client := benchCA.IssueClient(tb, benchUser)
	clientCert, clientKey := client.Write(tb, dir, "bench-client")
	listen := benchCA.IssueServer(tb, "127.0.0.1")

	s.pg = harness.PostgresWith(tb, harness.PostgresOptions{
		TLS:      harness.TLSOptions{ClientCA: append(append([]byte(nil), dbClientPEM...), benchCA.CertPEM...)},
		Users:    []string{benchUser},
		Settings: pgSettings,
	})
	s.conns[TargetDirect] = Conn{Host: s.pg.Host(), Port: strconv.Itoa(s.pg.Port()), User: benchUser, DBName: "postgres",
		SSLMode: "verify-full", SSLRootCert: s.pg.ServerCAFile, SSLCert: clientCert, SSLKey: clientKey}

	// The relay: TLS both legs, bytes copied.
	serverCA, err := os.ReadFile(s.pg.ServerCAFile)
	if err != nil {
		tb.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(serverCA)
	clientPair := client.TLSCertificate()
	relay := &Relay{
		ClientTLS:   &tls.Config{Certificates: []tls.Certificate{listen.TLSCertificate()}},
		Upstream:    s.pg.Addr(),
		UpstreamTLS: &tls.Config{RootCAs: roots, ServerName: s.pg.Host(), Certificates: []tls.Certificate{clientPair}},
	}
	s.conns[TargetRelay] = s.serve(tb, func(ctx context.Context, ln net.Listener) error { return relay.Serve(ctx, ln) },
		Conn{SSLMode: "verify-full", SSLRootCert: benchCAFile, SSLCert: clientCert, SSLKey: clientKey})

	// pgbouncer: session pooling, TLS both legs, certificate logins.
	s.bouncer = StartPgbouncer(tb, PgbouncerOptions{
		UpstreamHost: s.pg.Host(), UpstreamPort: s.pg.Port(), DBName: "postgres", Users: []string{benchUser},
		ServerCA: serverCA, ServerCert: client.CertPEM, ServerKey: client.KeyPEM,
		ClientCert: listen.CertPEM, ClientKey: listen.KeyPEM, ClientCA: benchCA.CertPEM,
	})
	s.conns[TargetPgBouncer] = Conn{Host: "127.0.0.1", Port: strconv.Itoa(s.bouncer.Port), User: benchUser, DBName: "postgres",
		SSLMode: "verify-full", SSLRootCert: benchCAFile, SSLCert: clientCert, SSLKey: clientKey}

	// Embedded JetStream with file storage, reached in-process, with the
	// identities tollgate start gives its parts: the broker makes the
	// streams, the agents publish as the agent.
	creds, err := natsserver.LoadOrCreateCredentials(filepath.Join(dir, "nats-auth"))
	if err != nil {
		tb.Fatal(err)
	}
	ns, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(dir, "nats"), Listen: natsserver.InProcessOnly, Auth: creds})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(ns.Shutdown)
	bnc, err := ns.ConnectAs(natsserver.Broker)
	if err != nil {
		tb.Fatal(err)
	}
	bjs, err := jetstream.New(bnc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := waitCtx(30 * time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, bjs, events.StreamOptions{}); err != nil {
		tb.Fatal(err)
	}
	nc, err := ns.ConnectAs(natsserver.Agent)
	if err != nil {
		tb.Fatal(err)
	}
	if s.js, err = jetstream.New(nc); err != nil {
		tb.Fatal(err)
	}
	anc, err := ns.ConnectAs(natsserver.Auditor)
	if err != nil {
		tb.Fatal(err)
	}
	if s.auditor, err = jetstream.New(anc); err != nil {
		tb.Fatal(err)
	}

	// Certificates live a day: a full make bench takes well over an hour.
	hostPair := agenttest.HostCert(tb, cas, "bench-agent", []string{"127.0.0.1", "localhost"}, 24*time.Hour)
	hostPEM, err := cas.CertPEM(ca.Host)
	if err != nil {
		tb.Fatal(err)
	}
	hostCAFile := agenttest.WriteFile(tb, dir, "host-ca.crt", hostPEM)
	s.userPair = agenttest.UserCert(tb, cas, identity.Identity{User: "alice", Roles: []string{"bench"}}, 24*time.Hour)
	userCertFile, userKeyFile := agenttest.WriteCert(tb, dir, "alice", s.userPair)
	roles, err := access.Parse([]byte(`
kind: role
metadata: {name: bench}
spec:
  allow:
    db_labels: {env: bench}
    db_users: [bench]
    db_names: ["*"]
`))
	if err != nil {
		tb.Fatal(err)
	}
	userPool, err := cas.Pool(ca.User)
	if err != nil {
		tb.Fatal(err)
	}
	issue := agent.CachedClientCerts(func(pub crypto.PublicKey, u string, ttl time.Duration) (*x509.Certificate, []byte, error) {
		return cas.IssueDBClient(pub, u, ttl)
	}, time.Hour)
	// The agents sign frames and seal sessions with their host key, as
	// `tollgate start` makes them.
	signer, err := events.NewSigner(hostPair.PrivateKey.(crypto.Signer), hostPair.Leaf)
	if err != nil {
		tb.Fatal(err)
	}

	s.hostRoots, err = cas.Pool(ca.Host)
	if err != nil {
		tb.Fatal(err)
	}
	// The tunneled agent's certificate names its database: the proxy
	// routes to an agent only the databases its certificate names, and
	// libpq's verify-full checks the name it sent as SNI.
	tunnelPair := agenttest.HostCert(tb, cas, "bench-tunnel-agent", []string{"pg"}, 24*time.Hour)
	s.proxy = s.startProxy(tb, cas)

	// One agent per audit mode, each with one database so that pgbench,
	// which sends no SNI for an IP address, reaches it; the async agent's
	// publisher is asynchronous too, as audit.mode: async configures it.
	// The agent of TargetStrictViaProxy is the strict one again, but with
	// no listening socket: it dials the proxy and serves the streams of
	// its reverse tunnel.
	for _, m := range []struct {
		target string
		mode   events.Mode
	}{{TargetStrict, events.ModeStrict}, {TargetAsync, events.ModeAsync}, {TargetNoStore, events.ModeStrict}, {TargetUnsigned, events.ModeStrict},
		{TargetStrictViaProxy, events.ModeStrict}} {
		var rec agent.Recorder = discard{}
		if m.target != TargetNoStore {
			opts := []events.PublisherOption{events.WithMode(m.mode), events.WithLogger(agenttest.Quiet())}
			if m.target != TargetUnsigned {
				opts = append(opts, events.WithSigner(signer))
			}
			pub, err := events.NewPublisher(s.js, "bench", opts...)
			if err != nil {
				tb.Fatal(err)
			}
			s.pubs[m.target] = pub
			tb.Cleanup(func() { _ = pub.Close(context.Background()) })
			rec = pub
		}
		pair := hostPair
		if m.target == TargetStrictViaProxy {
			pair = tunnelPair
		}
		srv, err := agent.NewServer(agent.ServerConfig{
			Cluster: "bench",
			Databases: []config.Database{{Name: "pg", Protocol: "postgres", URI: s.pg.Addr(), AuditMode: m.mode.String(),
				StaticLabels: map[string]string{"env": "bench"},
				TLS:          config.DatabaseTLS{Mode: "verify-full", CACertFile: s.pg.ServerCAFile}}},
			TLS:        &tls.Config{Certificates: []tls.Certificate{pair}},
			UserCAs:    userPool,
			Identify:   identity.FromCertificate,
			Authorize:  agent.RoleAuthorizer(func([]string) []access.Role { return roles }),
			Recorder:   rec,
			ClientCert: issue,
			Engines:    map[string]agent.Engine{"postgres": postgres.New(postgres.Options{Logger: agenttest.Quiet()})},
			Logger:     agenttest.Quiet(),
		})
		if err != nil {
			tb.Fatal(err)
		}
		c := Conn{SSLMode: "verify-full", SSLRootCert: hostCAFile, SSLCert: userCertFile, SSLKey: userKeyFile}
		if m.target == TargetStrictViaProxy {
			s.conns[m.target] = s.serveTunnel(tb, srv, tunnelPair, c)
			continue
		}
		s.conns[m.target] = s.serve(tb, func(ctx context.Context, ln net.Listener) error { return srv.Serve(ctx, ln) }, c)
	}
	return s
}

// startProxy runs the proxy's public port in this process, with the
// certificate tollgate start gives it, until the test ends.
func (s *stack) startProxy(tb testing.TB, cas *ca.Authorities) *proxy.Server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := daemon.HostCertificate(cas, ca.ProxyHostID, []string{"127.0.0.1", "localhost"})
	if err != nil {
		tb.Fatal(err)
	}
	px, err := proxy.New(proxy.Options{Listener: ln, Cert: cert, AgentCAs: s.hostRoots, Log: agenttest.Quiet()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- px.Serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("proxy: %v", err)
		}
	})
	return px
}

// serveTunnel serves srv on a reverse tunnel to the proxy, as an agent
// configured with db_service.proxy_addrs and no listen address does, and
// returns c pointed at the proxy's port. libpq connects to the address
// and sends the database's name as SNI, which the proxy routes on and the
// agent's certificate is verified against.
func (s *stack) serveTunnel(tb testing.TB, srv *agent.Server, pair tls.Certificate, c Conn) Conn {
	tb.Helper()
	tl, err := tunnel.Listen(tunnel.Options{Addrs: []string{s.proxy.Addr().String()}, HostID: "bench-tunnel-agent", Databases: []string{"pg"},
		TLS: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: s.hostRoots}, Log: agenttest.Quiet()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, tl) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("serve the tunnel: %v", err)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); len(s.proxy.Databases()["pg"]) == 0; {
		if time.Now().After(deadline) {
			tb.Fatal("the agent's tunnel to the proxy did not open in 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	host, port, _ := net.SplitHostPort(s.proxy.Addr().String())
	c.Host, c.HostAddr, c.Port, c.User, c.DBName = "pg", host, port, benchUser, "postgres"
	return c
}

// discard is a recorder that stores nothing.
type discard struct{}

func (discard) Publish(context.Context, events.Event) error        { return nil }
func (discard) PublishBatch(context.Context, []events.Event) error { return nil }

// serve runs an in-process listener until the test ends and returns c
// pointed at it.
func (s *stack) serve(tb testing.TB, serve func(context.Context, net.Listener) error, c Conn) Conn {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("serve %s: %v", ln.Addr(), err)
		}
	})
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	c.Host, c.Port, c.User, c.DBName = host, port, benchUser, "postgres"
	return c
}

// auditEvents is the number of events the AUDIT stream holds. A message
// is a frame of many events or one event on its own, so the messages
// stored since the last call are read and their events counted.
func (s *stack) auditEvents(tb testing.TB) uint64 {
	tb.Helper()
	ctx, cancel := waitCtx(60 * time.Second)
	defer cancel()
	st, err := s.auditor.Stream(ctx, events.AuditStream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	last := info.State.LastSeq
	if last <= s.auditSeq {
		return s.auditN
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: s.auditSeq + 1})
	if err != nil {
		tb.Fatal(err)
	}
	it, err := c.Messages(jetstream.PullMaxMessages(2000))
	if err != nil {
		tb.Fatal(err)
	}
	defer it.Stop()
	count := func([]byte) error { s.auditN++; return nil }
	for s.auditSeq < last {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			tb.Fatalf("reading AUDIT after %d: %v", s.auditSeq, err)
		}
		md, err := m.Metadata()
		if err != nil {
			tb.Fatal(err)
		}
		if err := events.SplitEvents(m.Data(), count); err != nil {
			tb.Fatalf("AUDIT %d: %v", md.Sequence.Stream, err)
		}
		s.auditSeq = md.Sequence.Stream
	}
	return s.auditN
}

// adminEnv is the libpq environment of the superuser over the Unix socket.
func (s *stack) adminEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "PGHOST=" + s.pg.SocketDir, "PGPORT=" + strconv.Itoa(s.pg.Port()),
		"PGUSER=" + s.pg.Superuser, "PGDATABASE=postgres", "PGSSLMODE=disable"}
}
