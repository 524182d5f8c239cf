package redis_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/redis"
	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/protocol"
	"github.com/tollgate-db/tollgate/test/harness"
)

// stack is a real Redis trusting Tollgate's db-client CA with ACL users,
// an embedded JetStream, the publisher, and an agent in front of Redis.
type stack struct {
	db      *harness.RedisServer
	nats    *harness.NATSServer
	js      jetstream.JetStream
	cas     *ca.Authorities
	addr    string // the agent's TLS port
	dir     string
	hostCA  string // verifies the agent's certificate
	userCrt string // alice's user certificate and key
	userKey string
	user    tls.Certificate
}

type stackOptions struct {
	mode string
	// roleOptions is the role's options block.
	roleOptions string
	// state, when set, gives the agent a Lifecycle reading it.
	state agent.StateSource
}

const roleYAML = `
kind: role
metadata: {name: dev}
spec:
  allow:
    db_labels: {env: test}
    db_users: [app, default]
    db_names: ["0", "1"]
`

func newStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	if o.mode == "" {
		o.mode = "strict"
	}
	dir := t.TempDir()
	cas, err := ca.Open(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	clientCA, err := cas.CertPEM(ca.DBClient)
	if err != nil {
		t.Fatal(err)
	}
	db := harness.RedisWith(t, harness.RedisOptions{TLS: harness.TLSOptions{ClientCA: clientCA}, Users: []string{"app", "other"}})

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
	ctx, cancel := context.WithCancel(context.Background())
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(js, "test", events.WithAckTimeout(time.Second), events.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}

	hostKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hostCert, _, err := cas.IssueHost(hostKey.Public(), "agent", []string{"localhost", "rd1", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	userKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	userCert, _, err := cas.IssueUser(userKey.Public(), identity.Identity{User: "alice", Roles: []string{"dev"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{db: db, nats: ns, js: js, cas: cas, dir: dir,
		user: tls.Certificate{Certificate: [][]byte{userCert.Raw}, PrivateKey: userKey, Leaf: userCert}}
	hostPEM, _ := cas.CertPEM(ca.Host)
	s.hostCA = agenttest.WriteFile(t, dir, "host-ca.crt", hostPEM)
	s.userCrt = agenttest.WriteFile(t, dir, "alice.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: userCert.Raw}))
	kb, _ := x509.MarshalPKCS8PrivateKey(userKey)
	s.userKey = agenttest.WriteFile(t, dir, "alice.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))

	spec := roleYAML
	if o.roleOptions != "" {
		spec += "  options: " + o.roleOptions + "\n"
	}
	roles, err := access.Parse([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	userPool, _ := cas.Pool(ca.User)
	eng := redis.New(redis.Options{Logger: quiet()})
	dbConf := config.Database{Name: "rd1", Protocol: protocol.Redis, URI: db.Addr(), AuditMode: o.mode,
		StaticLabels: map[string]string{"env": "test"},
		TLS:          config.DatabaseTLS{Mode: "verify-full", CACertFile: db.ServerCAFile, ServerName: "localhost"}}
	var life *agent.Lifecycle
	if o.state != nil {
		life = agent.NewLifecycle(o.state, agent.LifecycleOptions{Interval: 20 * time.Millisecond, Logger: quiet()})
		go life.Run(ctx)
	}
	srv, err := agent.NewServer(agent.ServerConfig{
		Cluster:   "test",
		Databases: []config.Database{dbConf},
		TLS:       &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{hostCert.Raw}, PrivateKey: hostKey}}},
		UserCAs:   userPool,
		Identify:  identity.FromCertificate,
		Authorize: agent.RoleAuthorizer(func([]string) []access.Role { return roles }),
		Recorder:  pub,
		ClientCert: agent.CachedClientCerts(func(pub crypto.PublicKey, u string, ttl time.Duration) (*x509.Certificate, []byte, error) {
			return cas.IssueDBClient(pub, u, ttl)
		}, time.Hour),
		Engines:   map[string]agent.Engine{protocol.Redis: eng},
		Logger:    quiet(),
		Lifecycle: life,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ctx, ln) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = pub.Close(context.Background())
	})
	return s
}

func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// agentTLS is the client side of TLS to the agent with alice's certificate.
func (s *stack) agentTLS(t testing.TB) *tls.Config {
	pool, err := s.cas.Pool(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, ServerName: "rd1", Certificates: []tls.Certificate{s.user}}
}

// client is go-redis through the agent, signing in as user with a
// password the agent must neither forward nor record.
func (s *stack) client(t testing.TB, user string, proto int) *goredis.Client {
	c := goredis.NewClient(&goredis.Options{
		Addr: s.addr, TLSConfig: s.agentTLS(t), Username: user, Password: "client-secret-pw",
		Protocol: proto, DisableIdentity: true, PoolSize: 2, MaxRetries: -1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (s *stack) waitAudit(t testing.TB, what string, cond func([]map[string]any) bool) []map[string]any {
	t.Helper()
	return agenttest.WaitAudit(t, s.js, what, cond)
}

// queries are the db_query of every query event, in order.
func queries(evs []map[string]any) []string {
	var out []string
	for _, e := range agenttest.OfType(evs, "db.session.query") {
		out = append(out, e["db_query"].(string))
	}
	return out
}

// statsDelta is what the server counted between two INFO commandstats,
// without the harness's own AUTH and INFO.
func statsDelta(before, after map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	out["auth"] -= 1
	out["info"] -= 1
	for k, v := range out {
		if v <= 0 {
			delete(out, k)
		}
	}
	return out
}

// countByCommand counts query events by the command Redis counts them
// under: lower-case name, with the subcommand of a container command.
func countByCommand(qs []string) map[string]int64 {
	out := map[string]int64{}
	for _, q := range qs {
		f := strings.Fields(q)
		name := strings.ToLower(f[0])
		switch name {
		case "config", "client", "acl", "object", "command", "memory", "xinfo", "script", "function", "pubsub":
			if len(f) > 1 {
				name += "|" + strings.ToLower(f[1])
			}
		}
		out[name]++
	}
	return out
}
