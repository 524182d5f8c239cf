package agenttest

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/test/harness"
)

// Stack is Tollgate's authorities, an embedded JetStream with the AUDIT
// and STATE streams, the audit publisher, and a user certificate; Serve
// puts an agent in front of a database the test started. Everything stops
// when the test ends.
type Stack struct {
	// Dir is the stack's directory; the authorities are kept in Dir/ca
	// (ca.Open(Dir)), so a broker whose data_dir is Dir shares them.
	Dir  string
	CAs  *ca.Authorities
	NATS *harness.NATSServer
	JS   jetstream.JetStream
	Pub  *events.Publisher
	// User is the certificate of Options.User, and UserCertFile and
	// UserKeyFile the same as PEM files for clients that read files
	// (psql, mariadb, redis-cli); HostCAFile verifies the agent.
	User                                  tls.Certificate
	HostCAFile, UserCertFile, UserKeyFile string
	// Addr is the TLS port of the agent Serve started last.
	Addr string

	cluster string
	ctx     context.Context
}

// Options shape a Stack. The zero value is alice with role dev, new
// authorities, cluster test and a one-second publish acknowledgement.
type Options struct {
	// CAs are authorities shared between stacks, when making new ones
	// for each is too slow.
	CAs *ca.Authorities
	// User is whom Stack.User names.
	User identity.Identity
	// Cluster is the cluster name of the publisher and the agents.
	Cluster string
	// AckTimeout is how long the publisher waits for JetStream.
	AckTimeout time.Duration
	// InProcess connects to NATS in-process rather than over TCP, as the
	// all-in-one process does: what the benchmarks measure. Such a
	// connection does not survive NATS.Restart.
	InProcess bool
}

// New starts the authorities, NATS and the publisher.
func New(t testing.TB, o Options) *Stack {
	t.Helper()
	if o.User.User == "" {
		o.User = identity.Identity{User: "alice", Roles: []string{"dev"}}
	}
	if o.Cluster == "" {
		o.Cluster = "test"
	}
	if o.AckTimeout == 0 {
		o.AckTimeout = time.Second
	}
	s := &Stack{Dir: t.TempDir(), CAs: o.CAs, cluster: o.Cluster}
	var err error
	if s.CAs == nil {
		if s.CAs, err = ca.Open(s.Dir); err != nil {
			t.Fatal(err)
		}
	}
	s.NATS = harness.NATS(t)
	var nc *nats.Conn
	if o.InProcess {
		nc, err = nats.Connect("", nats.InProcessServer(s.NATS.Server()))
	} else {
		nc, err = nats.Connect(s.NATS.URL())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if s.JS, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s.ctx = ctx
	if err := events.EnsureStreams(ctx, s.JS, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if s.Pub, err = events.NewPublisher(s.JS, o.Cluster, events.WithAckTimeout(o.AckTimeout), events.WithLogger(Quiet())); err != nil {
		t.Fatal(err)
	}
	// Registered before any agent's, so it runs after every agent stopped.
	t.Cleanup(func() { _ = s.Pub.Close(context.Background()) })

	s.User = s.Cert(t, o.User, time.Hour)
	hostPEM, err := s.CAs.CertPEM(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	s.HostCAFile = WriteFile(t, s.Dir, "host-ca.crt", hostPEM)
	s.UserCertFile, s.UserKeyFile = WriteCert(t, s.Dir, o.User.User, s.User)
	return s
}

// Context ends when the test does.
func (s *Stack) Context() context.Context { return s.ctx }

// DBClientCA is the PEM of the CA the database must trust: the agent logs
// in with certificates it issues.
func (s *Stack) DBClientCA(t testing.TB) []byte {
	t.Helper()
	b, err := s.CAs.CertPEM(ca.DBClient)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// HostCAs is the pool that verifies an agent's certificate.
func (s *Stack) HostCAs(t testing.TB) *x509.CertPool {
	t.Helper()
	pool, err := s.CAs.Pool(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// TLS is a client's side of TLS to the agent: the database's name as the
// server name, and certs, or the stack's user when none are given.
func (s *Stack) TLS(t testing.TB, sni string, certs ...tls.Certificate) *tls.Config {
	t.Helper()
	if len(certs) == 0 {
		certs = []tls.Certificate{s.User}
	}
	return &tls.Config{RootCAs: s.HostCAs(t), ServerName: sni, Certificates: certs}
}

// Database is how the engines' tests describe their database: labelled
// env=test, reached with verify-full against caFile.
func Database(name, protocol, uri, caFile, mode string) config.Database {
	return config.Database{Name: name, Protocol: protocol, URI: uri, AuditMode: mode,
		StaticLabels: map[string]string{"env": "test"},
		TLS:          config.DatabaseTLS{Mode: "verify-full", CACertFile: caFile}}
}

// ParseDatabase is a database of protocol p as the configuration file
// gives it, with the further fields src (YAML lines, e.g. "name: cache").
func ParseDatabase(t testing.TB, p, src string) config.Database {
	t.Helper()
	var d config.Database
	if err := yaml.Unmarshal([]byte("protocol: "+p+"\n"+src), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// Role is the YAML of role dev, which every test certificate holds: it
// allows dbUsers and dbNames (none: the line is left out) on databases
// labelled env=test, with options (a YAML flow map, e.g.
// "{mysql_local_infile: false}") when not empty.
func Role(dbUsers, dbNames []string, options string) string {
	quoted := func(xs []string) string {
		q := make([]string, len(xs))
		for i, x := range xs {
			q[i] = strconv.Quote(x)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	y := "kind: role\nmetadata: {name: dev}\nspec:\n  allow:\n    db_labels: {env: test}\n    db_users: " + quoted(dbUsers) + "\n"
	if len(dbNames) > 0 {
		y += "    db_names: " + quoted(dbNames) + "\n"
	}
	if options != "" {
		y += "  options: " + options + "\n"
	}
	return y
}

// Agent is what Serve starts: an agent.Server whose zero fields get the
// stack's defaults (its cluster, a host certificate for localhost,
// 127.0.0.1 and each database's name, the user CA, identity from the
// certificate, the roles below, the stack's publisher, db-client
// certificates of the stack's authorities, a quiet logger).
type Agent struct {
	agent.ServerConfig
	// Roles is the YAML of the roles every certificate's role names
	// resolve to, when ServerConfig.Authorize is not set; none refuses
	// every session.
	Roles string
	// State, when set, gives the agent a Lifecycle reading it every 20 ms.
	State agent.StateSource
	// Listeners are more listeners the agent serves, made once the
	// server exists (MySQL's direct port).
	Listeners func(*agent.Server) []net.Listener
}

// Serve starts an agent on a port of its own and returns the port's
// address; a Serve error fails the test when it ends.
func (s *Stack) Serve(t testing.TB, a Agent) string {
	t.Helper()
	c := a.ServerConfig
	if c.Cluster == "" {
		c.Cluster = s.cluster
	}
	if c.TLS == nil {
		names := []string{"localhost", "127.0.0.1"}
		for _, db := range c.Databases {
			names = append(names, db.Name)
		}
		c.TLS = &tls.Config{Certificates: []tls.Certificate{s.HostCert(t, "agent", names)}}
	}
	if c.UserCAs == nil {
		pool, err := s.CAs.Pool(ca.User)
		if err != nil {
			t.Fatal(err)
		}
		c.UserCAs = pool
	}
	if c.Identify == nil {
		c.Identify = identity.FromCertificate
	}
	if c.Authorize == nil {
		var roles []access.Role
		if a.Roles != "" {
			var err error
			if roles, err = access.Parse([]byte(a.Roles)); err != nil {
				t.Fatal(err)
			}
		}
		c.Authorize = agent.RoleAuthorizer(func([]string) []access.Role { return roles })
	}
	if c.Recorder == nil {
		c.Recorder = s.Pub
	}
	if c.ClientCert == nil {
		c.ClientCert = agent.CachedClientCerts(func(pub crypto.PublicKey, u string, ttl time.Duration) (*x509.Certificate, []byte, error) {
			return s.CAs.IssueDBClient(pub, u, ttl)
		}, time.Hour)
	}
	if c.Logger == nil {
		c.Logger = Quiet()
	}
	ctx, cancel := context.WithCancel(s.ctx)
	var wg sync.WaitGroup
	if a.State != nil && c.Lifecycle == nil {
		c.Lifecycle = agent.NewLifecycle(a.State, agent.LifecycleOptions{Interval: 20 * time.Millisecond, Logger: Quiet()})
		wg.Go(func() { c.Lifecycle.Run(ctx) })
	}
	srv, err := agent.NewServer(c)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	lns := []net.Listener{ln}
	if a.Listeners != nil {
		lns = append(lns, a.Listeners(srv)...)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lns...) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		wg.Wait()
	})
	s.Addr = ln.Addr().String()
	return s.Addr
}

// Tunnel does what tg proxy db --tunnel does for protocols other than
// PostgreSQL: each connection to the local plaintext port it returns is
// carried to addr in TLS with cfg (the user's certificate, the database's
// name as SNI). Each direction is closed for writing when the other side
// is done with it; a connection still open when the test ends is closed.
func Tunnel(t testing.TB, addr string, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		open = map[net.Conn]bool{}
	)
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			open[c] = true
		} else {
			delete(open, c)
		}
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c, true)
			wg.Go(func() {
				defer track(c, false)
				defer c.Close()
				up, err := tls.Dial("tcp", addr, cfg)
				if err != nil {
					return
				}
				track(up, true)
				defer track(up, false)
				defer up.Close()
				errc := make(chan error, 2)
				go func() { _, err := io.Copy(up, c); _ = up.CloseWrite(); errc <- err }()
				go func() { _, err := io.Copy(c, up); _ = c.(*net.TCPConn).CloseWrite(); errc <- err }()
				<-errc
				// A peer that never closes its side is not waited on
				// for long.
				timer := time.AfterFunc(5*time.Second, func() { c.Close(); up.Close() })
				<-errc
				timer.Stop()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// Audit reads every event of the stack's AUDIT stream stored so far.
func (s *Stack) Audit(t testing.TB) []map[string]any {
	t.Helper()
	return Audit(t, s.JS)
}

// WaitAudit polls the stack's AUDIT stream until cond holds on it.
func (s *Stack) WaitAudit(t testing.TB, what string, cond func([]map[string]any) bool) []map[string]any {
	t.Helper()
	return WaitAudit(t, s.JS, what, cond)
}

// Quiet is the agent's logger in tests: silent, unless the tests run with
// -v and TG_TEST_LOG set.
func Quiet() *slog.Logger {
	if testing.Verbose() && os.Getenv("TG_TEST_LOG") != "" {
		return slog.Default()
	}
	return slog.New(slog.DiscardHandler)
}
