package mysql_test

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
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/mysql"
	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/test/harness"
)

// stack is a real MariaDB trusting Tollgate's db-client CA, an embedded
// JetStream, the publisher, and an agent in front of the database with two
// ports: raw TLS (what tg proxy db --tunnel dials) and the direct MySQL
// port (greeting first, then SSLRequest and TLS).
type stack struct {
	db      *harness.MariaDBServer
	nats    *harness.NATSServer
	js      jetstream.JetStream
	cas     *ca.Authorities
	tlsAddr string // raw TLS
	direct  string // MySQL clients connecting themselves
	dir     string
	hostCA  string // verifies the agent's certificate
	userCrt string // alice's user certificate and key
	userKey string
	user    tls.Certificate
}

type stackOptions struct {
	mode  string
	users []string
	// dbNames the role allows (default test).
	dbNames []string
	// maxPacket is the engine's limit on a client command (default).
	maxPacket int
	// state, when set, gives the agent a Lifecycle reading it.
	state agent.StateSource
	// dbArgs are extra mariadbd options.
	dbArgs []string
	// roleOptions is the role's options block, e.g. "{mysql_local_infile: false}".
	roleOptions string
}

const roleYAML = `
kind: role
metadata: {name: dev}
spec:
  allow:
    db_labels: {env: test}
    db_users: [app, sbtest, edu]
    db_names: [%s]
`

func newStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	if o.mode == "" {
		o.mode = "strict"
	}
	if len(o.users) == 0 {
		o.users = []string{"app"}
	}
	if len(o.dbNames) == 0 {
		o.dbNames = []string{"test"}
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
	db := harness.MariaDBWith(t, harness.MariaDBOptions{TLS: harness.TLSOptions{ClientCA: clientCA}, Users: o.users, Args: o.dbArgs})
	db.MustExec(t, "CREATE DATABASE secret; CREATE TABLE secret.codes (c INT); CREATE TABLE test.accounts (id INT PRIMARY KEY, owner VARCHAR(40), balance DECIMAL(12,2), opened DATETIME(6), score DOUBLE, big BIGINT UNSIGNED, blob_col VARBINARY(64))")
	for _, u := range o.users {
		db.MustExec(t, "GRANT ALL ON secret.* TO '"+u+"'@'%'")
	}

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
	hostCert, _, err := cas.IssueHost(hostKey.Public(), "agent", []string{"localhost", "my1", "127.0.0.1"}, time.Hour)
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
	s.hostCA = writeFile(t, dir, "host-ca.crt", hostPEM)
	s.userCrt = writeFile(t, dir, "alice.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: userCert.Raw}))
	kb, _ := x509.MarshalPKCS8PrivateKey(userKey)
	s.userKey = writeFile(t, dir, "alice.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))

	spec := strings.Replace(roleYAML, "%s", strings.Join(o.dbNames, ", "), 1)
	if o.roleOptions != "" {
		spec += "  options: " + o.roleOptions + "\n"
	}
	roles, err := access.Parse([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	userPool, _ := cas.Pool(ca.User)
	eng := mysql.New(mysql.Options{Logger: quiet(), MaxPacket: o.maxPacket})
	dbConf := config.Database{Name: "my1", Protocol: "mysql", URI: db.Addr(), AuditMode: o.mode,
		StaticLabels: map[string]string{"env": "test"},
		TLS:          config.DatabaseTLS{Mode: "verify-full", CACertFile: db.ServerCAFile}}
	var life *agent.Lifecycle
	if o.state != nil {
		life = agent.NewLifecycle(o.state, agent.LifecycleOptions{Interval: 20 * time.Millisecond, Logger: quiet()})
		go life.Run(ctx)
	}
	// One agent.Server serves the raw TLS port and the direct MySQL port.
	newServer := func() *agent.Server {
		srv, err := agent.NewServer(agent.ServerConfig{
			Cluster:   "test",
			Databases: []config.Database{dbConf},
			TLS:       &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{hostCert.Raw}, PrivateKey: hostKey}}},
			UserCAs:   userPool,
			Identify:  identity.FromCertificate,
			Authorize: namesEnforced(roles),
			Recorder:  pub,
			ClientCert: agent.CachedClientCerts(func(pub crypto.PublicKey, u string, ttl time.Duration) (*x509.Certificate, []byte, error) {
				return cas.IssueDBClient(pub, u, ttl)
			}, time.Hour),
			Engines:   map[string]agent.Engine{"mysql": eng},
			Logger:    quiet(),
			Lifecycle: life,
		})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	srv := newServer()
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	directLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.tlsAddr, s.direct = tlsLn.Addr().String(), directLn.Addr().String()
	dbInfo, _ := srv.Database("my1")
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = srv.Serve(ctx, tlsLn, eng.Listener(directLn, mysql.ListenerOptions{Cluster: "test", Recorder: pub, Database: dbInfo}))
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = pub.Close(context.Background())
	})
	return s
}

// namesEnforced is the role decision with db_names checked for MySQL too:
// the engine checks every database change, so the name a session uses is
// known at all times.
func namesEnforced(roles []access.Role) agent.Authorizer {
	return func(id identity.Identity, db agent.DatabaseInfo, dbUser, dbName string) agent.Decision {
		d := access.Decide(id, roles, access.Database{Name: db.Name, Labels: db.Labels}, dbUser, dbName)
		return agent.Decision{Allowed: d.Allowed, Rule: d.Rule, Refused: d.Refused, Reason: d.Reason, Options: access.Options(roles)}
	}
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
	return &tls.Config{RootCAs: pool, ServerName: "my1", Certificates: []tls.Certificate{s.user}}
}

// tunnel is what tg proxy db --tunnel does for MySQL: a local plaintext
// port whose connections are carried in TLS to the agent.
func (s *stack) tunnel(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.agentTLS(t)
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := tls.Dial("tcp", s.tlsAddr, cfg)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() { _, _ = io.Copy(up, c); _ = up.CloseWrite(); close(done) }()
				_, _ = io.Copy(c, up)
				c.Close()
				<-done
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// settled waits for n session ends with every session's events gapless: a
// batch retried after an outage may store its later events before its
// earlier ones, so a gap can show for a moment; one that stays is a loss.
func settled(n int) func([]map[string]any) bool {
	return func(evs []map[string]any) bool {
		return count("db.session.end", n)(evs) && gapless(evs) == nil
	}
}

// rendered is every statement text the audit says was sent: queries,
// prepares, and executes with their parameters put in place of the
// placeholders, without quotes (the general log quotes strings).
func rendered(evs []map[string]any) (map[string]int, []*regexp.Regexp) {
	out := map[string]int{}
	var patterns []*regexp.Regexp
	for _, ev := range evs {
		switch ev["type"] {
		case "db.session.query", "db.session.mysql.prepare":
			out[strings.TrimSpace(ev["db_query"].(string))]++
		case "db.session.mysql.execute":
			q, _ := ev["db_query"].(string)
			params, _ := ev["db_query_parameters"].([]any)
			var b, re strings.Builder
			i, binary := 0, false
			for _, r := range q {
				if r == '?' && i < len(params) {
					v := params[i].(string)
					b.WriteString(v)
					// The log writes bytes as the server escapes them.
					if strings.HasPrefix(v, "base64:") {
						binary = true
						re.WriteString(".*")
					} else {
						re.WriteString(regexp.QuoteMeta(unquote(v)))
					}
					i++
					continue
				}
				b.WriteRune(r)
				re.WriteString(regexp.QuoteMeta(unquote(string(r))))
			}
			if binary {
				patterns = append(patterns, regexp.MustCompile("^(?s)"+strings.TrimSpace(re.String())+"$"))
			} else {
				out["EXEC "+unquote(strings.TrimSpace(b.String()))]++
			}
		}
	}
	return out, patterns
}

func matchesAny(ps []*regexp.Regexp, s string) bool {
	for _, p := range ps {
		if p.MatchString(s) {
			return true
		}
	}
	return false
}

func unquote(s string) string { return strings.ReplaceAll(s, "'", "") }

// groundTruth checks that every statement MariaDB logged for a user has an
// audit event and returns how many it checked.
func groundTruth(t testing.TB, s *stack, evs []map[string]any, user string) int {
	t.Helper()
	logged, err := s.db.GeneralLogEntries()
	if err != nil {
		t.Fatal(err)
	}
	have, patterns := rendered(evs)
	n, missing := 0, 0
	for _, e := range logged {
		if !strings.HasPrefix(e.User, user+"@") {
			continue
		}
		var key string
		switch e.Command {
		case "Query", "Prepare":
			key = strings.TrimSpace(e.Argument)
		case "Execute":
			key = "EXEC " + unquote(strings.TrimSpace(e.Argument))
		default:
			continue
		}
		n++
		if have[key] == 0 && e.Command == "Execute" && matchesAny(patterns, unquote(strings.TrimSpace(e.Argument))) {
			continue
		}
		if have[key] == 0 {
			missing++
			if missing < 10 {
				t.Errorf("%s in the database log without an audit event: %q", e.Command, e.Argument)
			}
			continue
		}
		have[key]--
	}
	if missing > 0 {
		t.Fatalf("%d of %d logged statements of %s have no audit event", missing, n, user)
	}
	return n
}

// audit reads every event stored so far, checking each against its schema.
func (s *stack) audit(t testing.TB) []map[string]any {
	t.Helper()
	return agenttest.Audit(t, s.js)
}

// waitAudit polls the stream until cond holds on it.
func (s *stack) waitAudit(t testing.TB, what string, cond func([]map[string]any) bool) []map[string]any {
	t.Helper()
	return agenttest.WaitAudit(t, s.js, what, cond)
}

// The helpers every engine's end-to-end tests share.
var (
	ofType       = agenttest.OfType
	count        = agenttest.Count
	checkGapless = agenttest.CheckGapless
	writeFile    = agenttest.WriteFile
	gapless      = agenttest.Gapless
)
