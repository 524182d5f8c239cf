package proxy_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent/service"
	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/proxy"
	"github.com/tollgate-db/tollgate/test/harness"
)

func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.Default()
	}
	return slog.New(slog.DiscardHandler)
}

// world is a data dir with the CAs, PostgreSQL trusting the db-client CA,
// JetStream with the streams, and the broker's state store.
type world struct {
	dir   string
	cas   *ca.Authorities
	pg    *harness.PostgresServer
	js    jetstream.JetStream
	pub   *events.Publisher
	store *state.Store
}

func newWorld(t *testing.T) *world {
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
	return &world{dir: dir, cas: cas, pg: pg, js: js, pub: pub, store: store}
}

// recordingListener keeps every byte the proxy reads from or writes to its
// clients, to look for a statement in what passed through it.
type recordingListener struct {
	net.Listener
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordedConn{Conn: c, l: l}, nil
}

func (l *recordingListener) seen() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.buf.Bytes())
}

type recordedConn struct {
	net.Conn
	l *recordingListener
}

func (c *recordedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	c.l.buf.Write(p[:n])
	c.l.mu.Unlock()
	return n, err
}

func (c *recordedConn) Write(p []byte) (int, error) {
	c.l.mu.Lock()
	c.l.buf.Write(p)
	c.l.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recordedConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

// runningProxy is a proxy on addr with an HTTPS server behind its
// handoff, as the broker's API is in `tollgate start`.
type runningProxy struct {
	*proxy.Server
	rec    *recordingListener
	cert   tls.Certificate
	cancel context.CancelFunc
	done   chan error
}

func (w *world) startProxy(t *testing.T, addr string, opts ...func(*proxy.Options)) *runningProxy {
	t.Helper()
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingListener{Listener: ln}
	cert, err := daemon.HostCertificate(w.cas, "proxy", []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	hosts, _ := w.cas.Pool(ca.Host)
	ho := proxy.NewHandoff(ln.Addr())
	api := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { io.WriteString(rw, "api") })}
	go func() { _ = api.Serve(tls.NewListener(ho, &tls.Config{Certificates: []tls.Certificate{cert}})) }()
	t.Cleanup(func() { api.Close() })
	o := proxy.Options{Listener: rec, Handoff: ho, Cert: cert, AgentCAs: hosts,
		Registered: func(n string) (string, bool) { d, ok := w.store.Database(n); return d.HostID, ok },
		Recorder:   w.pub, Cluster: "test", RejectWindow: 3 * time.Second, Log: quiet().With("component", "proxy")}
	for _, f := range opts {
		f(&o)
	}
	px, err := proxy.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &runningProxy{Server: px, rec: rec, cert: cert, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- px.Serve(ctx) }()
	t.Cleanup(p.stop)
	return p
}

func (p *runningProxy) stop() {
	p.cancel()
	<-p.done
	p.done <- nil // stop is idempotent
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

func (w *world) userTLS(t *testing.T, sni string, id identity.Identity) *tls.Config {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, _, err := w.cas.IssueUser(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := w.cas.Pool(ca.Host)
	return &tls.Config{ServerName: sni, RootCAs: roots,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}}
}

// connectDirectTLS opens pgx over TLS from the first byte, as tg's tunnel
// does; peer receives the server certificate the client verified.
func connectDirectTLS(ctx context.Context, addr string, tc *tls.Config, peer *string) (*pgx.Conn, error) {
	pc, err := pgx.ParseConfig("host=127.0.0.1 port=1 sslmode=disable dbname=postgres user=app")
	if err != nil {
		return nil, err
	}
	pc.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
		d := tls.Dialer{Config: tc}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil && peer != nil {
			*peer = c.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName
		}
		return c, err
	}
	return pgx.ConnectConfig(ctx, pc)
}

// connectSSLRequest opens pgx as a native client does: SSLRequest, then
// TLS with the database name as SNI.
func connectSSLRequest(ctx context.Context, addr string, tc *tls.Config) (*pgx.Conn, error) {
	host, port, _ := net.SplitHostPort(addr)
	pc, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s sslmode=require dbname=postgres user=app connect_timeout=10", host, port))
	if err != nil {
		return nil, err
	}
	pc.TLSConfig = tc
	pc.Fallbacks = nil
	return pgx.ConnectConfig(ctx, pc)
}

// audit reads the events of AUDIT so far.
func audit(t *testing.T, js jetstream.JetStream) []map[string]any {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, events.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		if err := events.SplitEvents(m.Data, func(data []byte) error {
			var ev map[string]any
			if err := json.Unmarshal(data, &ev); err != nil {
				return err
			}
			out = append(out, ev)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func waitEvent(t *testing.T, js jetstream.JetStream, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var found map[string]any
	waitUntil(t, 15*time.Second, what, func() bool {
		for _, ev := range audit(t, js) {
			if match(ev) {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

// TestTunnelEndToEnd: an agent that listens on no port serves PostgreSQL
// through a proxy it dialed; the statement is audited, the proxy only saw
// ciphertext, an unknown database is refused with an event, the API is
// behind the same port, and the agent comes back after the proxy restarts.
func TestTunnelEndToEnd(t *testing.T) {
	w := newWorld(t)
	px := w.startProxy(t, "127.0.0.1:0")
	addr := px.Addr().String()

	cfg, err := config.Parse([]byte(`
cluster_name: test
db_service:
  proxy_addrs: [` + addr + `]
  databases:
    - name: pg1
      protocol: postgres
      uri: ` + w.pg.Addr() + `
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = w.dir
	if cfg.DBService.Listen != "" {
		t.Fatalf("db_service.listen defaulted to %q beside proxy_addrs", cfg.DBService.Listen)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agent, err := service.Start(ctx, service.Options{Config: cfg, JS: w.js, Recorder: w.pub, Log: quiet().With("component", "agent")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = agent.Wait() }()
	if agent.Addr != "" || agent.PublicAddr != addr {
		t.Fatalf("agent listening on %q, public address %q", agent.Addr, agent.PublicAddr)
	}
	waitUntil(t, 10*time.Second, "the agent's tunnel", func() bool { return len(px.Databases()["pg1"]) == 1 })
	if got := px.Databases()["pg1"][0]; got != agent.HostID {
		t.Fatalf("pg1 routed to %q, want %q", got, agent.HostID)
	}

	id := identity.Identity{User: "alice", Roles: []string{"access"},
		Traits: map[string][]string{identity.TraitDBUsers: {"app"}, identity.TraitDBNames: {"postgres"}}}
	marker := fmt.Sprintf("through-the-tunnel-%d", time.Now().UnixNano())

	// TLS from the first byte (tg's tunnel), then SSLRequest (psql, pgx).
	var peer string
	conn, err := connectDirectTLS(ctx, addr, w.userTLS(t, "pg1", id), &peer)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	if err := conn.QueryRow(ctx, "select $1::text || current_user", marker).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != marker+"app" {
		t.Fatalf("got %q", got)
	}
	conn.Close(ctx)
	// The client's TLS ended at the agent: it verified the agent's
	// certificate for pg1, one the proxy's own does not match.
	if peer != agent.HostID {
		t.Fatalf("the client's TLS peer is %q, want the agent %q", peer, agent.HostID)
	}
	if err := px.cert.Leaf.VerifyHostname("pg1"); err == nil {
		t.Fatal("the proxy's certificate is valid for pg1")
	}
	ssl, err := connectSSLRequest(ctx, addr, w.userTLS(t, "pg1", id))
	if err != nil {
		t.Fatal(err)
	}
	if err := ssl.QueryRow(ctx, "select $1::text || 'ssl'", marker).Scan(&got); err != nil || got != marker+"ssl" {
		t.Fatalf("through an SSLRequest: %q, %v", got, err)
	}
	ssl.Close(ctx)

	// psql, a native client, with the database name as host (its SNI)
	// and the proxy's address; every statement PostgreSQL logged for it
	// has its audit event.
	psqlMarker := fmt.Sprintf("psql-through-the-proxy-%d", time.Now().UnixNano())
	if out, err := w.psql(t, addr, "pg1", id, "select '"+psqlMarker+"'", "select count(*) from pg_class where relname = '"+psqlMarker+"'"); err != nil || !strings.HasPrefix(out, psqlMarker+"\n0") {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	logged, err := w.pg.StatementLogEntries()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range logged {
		if !strings.Contains(e.Text, psqlMarker) {
			continue
		}
		n++
		text := e.Text
		waitEvent(t, w.js, "the audit event of "+text, func(ev map[string]any) bool {
			return ev["type"] == "db.session.query" && ev["db_query"] == text
		})
	}
	if n != 2 {
		t.Fatalf("PostgreSQL logged %d statements of psql, want 2", n)
	}

	// The statement is audited by the agent, with the client's address
	// (not the proxy's) on the session.
	q := waitEvent(t, w.js, "the statement's audit event", func(ev map[string]any) bool {
		s, _ := ev["db_query"].(string)
		return ev["type"] == "db.session.postgres.parse" && strings.Contains(s, "$1::text || current_user")
	})
	// The agent recorded the bound value the proxy is shown below not to
	// have seen.
	waitEvent(t, w.js, "the marker in an audit event", func(ev map[string]any) bool {
		b, _ := json.Marshal(ev)
		return ev["sid"] == q["sid"] && bytes.Contains(b, []byte(marker))
	})
	start := waitEvent(t, w.js, "the session start", func(ev map[string]any) bool {
		return ev["type"] == "db.session.start" && ev["sid"] == q["sid"]
	})
	if a, _ := start["client_addr"].(string); !strings.HasPrefix(a, "127.0.0.1:") || a == addr {
		t.Fatalf("session start client_addr %q", a)
	}
	// Nothing the proxy carried holds the statement or its result in
	// clear: it spliced TLS records it has no key for.
	seen := px.rec.seen()
	if len(seen) < 1000 {
		t.Fatalf("the proxy carried %d bytes", len(seen))
	}
	if bytes.Contains(seen, []byte(marker)) || bytes.Contains(seen, []byte("current_user")) {
		t.Fatal("the proxy saw the statement in clear")
	}

	// A PostgreSQL client asking for a database no agent serves: the
	// proxy refuses it and records why.
	if c, err := connectSSLRequest(ctx, addr, w.userTLS(t, "nosuch", id)); err == nil {
		c.Close(ctx)
		t.Fatal("connected to an unknown database")
	}
	rej := waitEvent(t, w.js, "the refusal", func(ev map[string]any) bool {
		return ev["type"] == "db.session.rejected" && ev["sni"] == "nosuch"
	})
	if rej["reason"] != events.RejectUnknownDB || rej["error"] != "no database nosuch" || rej["db_service"] != nil {
		t.Fatalf("refusal %v", rej)
	}

	// More refusals from the same source are counted, not recorded one
	// by one: a flood makes a few events.
	for range 20 {
		if c, err := connectSSLRequest(ctx, addr, w.userTLS(t, "nosuch", id)); err == nil {
			c.Close(ctx)
			t.Fatal("connected to an unknown database")
		}
	}
	time.Sleep(300 * time.Millisecond)
	n = 0
	for _, ev := range audit(t, w.js) {
		if ev["type"] == "db.session.rejected" && ev["sni"] == "nosuch" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d events for 21 refusals within the window", n)
	}

	// A database registered in STATE whose agent is not connected is
	// refused even from a client that opens with TLS, rather than handed
	// to the API.
	if _, err := w.store.RegisterDatabase(ctx, state.Actor{User: "test"}, state.NewDatabase{Name: "offline", Protocol: "postgres",
		URI: w.pg.Addr(), HostID: "gone", AgentAddr: addr}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the registration", func() bool { _, ok := w.store.Database("offline"); return ok })
	if c, err := connectDirectTLS(ctx, addr, w.userTLS(t, "offline", id), nil); err == nil || !strings.Contains(err.Error(), "unrecognized name") {
		if err == nil {
			c.Close(ctx)
		}
		t.Fatalf("an offline database: %v, want the TLS alert unrecognized_name", err)
	}
	// psql, the native client, reports the alert as OpenSSL names it; the
	// words "is offline" are only in the event and in what tg says.
	if out, err := w.psql(t, addr, "offline", id, "SELECT 'offline'"); err == nil || !strings.Contains(out, "tlsv1 unrecognized name") {
		t.Fatalf("psql to an offline database: %v\n%s", err, out)
	} else {
		t.Logf("psql to an offline database says: %s", strings.TrimSpace(out))
	}
	off := waitEvent(t, w.js, "the refusal of the offline database", func(ev map[string]any) bool {
		return ev["type"] == "db.session.rejected" && ev["sni"] == "offline"
	})
	if off["db_service"] != "offline" || off["reason"] != events.RejectOffline || !strings.Contains(off["error"].(string), "database offline is offline: no agent connected") {
		t.Fatalf("refusal %v", off)
	}

	// A client asking for GSSAPI encryption first (libpq with a Kerberos
	// ticket) is told no, then asks for TLS.
	gc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = gc.SetDeadline(time.Now().Add(10 * time.Second))
	answers := make([]byte, 2)
	_, _ = gc.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30})
	_, err = io.ReadFull(gc, answers[:1])
	_, _ = gc.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f})
	if _, err2 := io.ReadFull(gc, answers[1:]); err != nil || err2 != nil || string(answers) != "NS" {
		t.Fatalf("GSSENCRequest then SSLRequest: answered %q (%v, %v)", answers, err, err2)
	}
	tc := tls.Client(gc, w.userTLS(t, "pg1", id))
	if err := tc.Handshake(); err != nil || tc.ConnectionState().PeerCertificates[0].Subject.CommonName != agent.HostID {
		t.Fatalf("TLS after GSSENCRequest: %v", err)
	}
	tc.Close()

	// Plain text is neither TLS nor PostgreSQL: closed, and recorded.
	pc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(pc, "GET / HTTP/1.0\r\n\r\n")
	_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := pc.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("plain text answered: %d, %v", n, err)
	}
	pc.Close()
	waitEvent(t, w.js, "the refusal of plain text", func(ev map[string]any) bool {
		return ev["type"] == "db.session.rejected" && ev["reason"] == events.RejectNotTLS
	})

	// Anything else reaches the server behind the handoff (the API).
	roots, _ := w.cas.Pool(ca.Host)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	resp, err := hc.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "api" {
		t.Fatalf("API answered %q", body)
	}

	// The proxy restarts on the same port: the agent dials again and
	// sessions work as before.
	px.stop()
	waitUntil(t, 10*time.Second, "the agent to notice", func() bool { return len(agent.Tunnels.Connected()) == 0 })
	restarted := time.Now()
	px2 := w.startProxy(t, addr)
	waitUntil(t, 15*time.Second, "the agent's tunnel again", func() bool { return len(px2.Databases()["pg1"]) == 1 })
	t.Logf("tunnel back %s after the proxy restarted", time.Since(restarted).Round(time.Millisecond))
	conn, err = connectDirectTLS(ctx, addr, w.userTLS(t, "pg1", id), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "select 'again'").Scan(&got); err != nil || got != "again" {
		t.Fatalf("after the restart: %q, %v", got, err)
	}
	conn.Close(ctx)
}

// TestAgentCertificateLimitsRouting: a tunnel claiming a database its
// host certificate does not name is refused.
func TestAgentCertificateLimitsRouting(t *testing.T) {
	cas, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := startBenchProxy(t, cas)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _, err := cas.IssueHost(key.Public(), "agent-x", []string{"pg1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tl := listenTunnel(t, cas, p.Addr().String(), "agent-x", []string{"pg2"}, tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf})
	time.Sleep(500 * time.Millisecond)
	if len(p.Databases()) != 0 || len(tl.Connected()) != 0 {
		t.Fatalf("routed %v, connected %v", p.Databases(), tl.Connected())
	}
	tl.Close()
	// The same agent announcing what its certificate names is routed.
	ok := listenTunnel(t, cas, p.Addr().String(), "agent-x", []string{"pg1", "pg2"}, tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf})
	waitUntil(t, 10*time.Second, "the tunnel", func() bool { return len(p.Databases()["pg1"]) == 1 })
	if got := ok.Connected()[p.Addr().String()]; len(got) != 1 || got[0] != "pg1" || len(p.Databases()["pg2"]) != 0 {
		t.Fatalf("acknowledged %v, routed %v", got, p.Databases())
	}
}

// An agent on another machine configured with proxy_addrs, a join token
// and the pin only: it joins the broker's API through the proxy's port,
// registers its database there with the proxy's address, keeps its tunnel
// on the same port, and clients reach the database through it.
func TestJoinedAgentThroughTheProxyOnly(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := raw.Addr().String()
	handoff := proxy.NewHandoff(raw.Addr())
	bcfg := config.Default()
	bcfg.ClusterName, bcfg.DataDir, bcfg.Proxy.Listen, bcfg.Proxy.PublicAddr = "test", w.dir, addr, addr
	b, err := daemon.Start(ctx, daemon.Options{Config: bcfg, JS: w.js, Audit: w.pub, Log: quiet(), Listener: handoff})
	if err != nil {
		t.Fatal(err)
	}
	hosts, _ := b.CAs.Pool(ca.Host)
	px, err := proxy.New(proxy.Options{Listener: raw, Handoff: handoff, Cert: b.HostCert, AgentCAs: hosts,
		Registered: func(n string) (string, bool) { d, ok := b.Store.Database(n); return d.HostID, ok },
		Recorder:   w.pub, Cluster: "test", Log: quiet().With("component", "proxy")})
	if err != nil {
		t.Fatal(err)
	}
	pxDone := make(chan error, 1)
	go func() { pxDone <- px.Serve(ctx) }()
	defer func() { cancel(); <-pxDone; _ = b.Wait() }()
	tok, err := b.Admin.As(state.Actor{User: "admin"}, "test").AddToken(ctx, api.AddTokenRequest{Type: "db"})
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := config.Parse([]byte(`
cluster_name: test
broker: {enabled: false}
proxy: {enabled: false}
db_service:
  proxy_addrs: [` + addr + `]
  join_token: ` + tok.Value + `
  broker_ca_pin: ` + tok.HostCAPin + `
  databases:
    - name: pg1
      protocol: postgres
      uri: ` + w.pg.Addr() + `
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	actx, acancel := context.WithCancel(ctx)
	agent, err := service.Start(actx, service.Options{Config: cfg, JS: w.js, Recorder: w.pub, Log: quiet().With("component", "agent")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { acancel(); _ = agent.Wait() }()
	if agent.Addr != "" {
		t.Fatalf("the agent listens on %s", agent.Addr)
	}
	waitUntil(t, 10*time.Second, "the agent's tunnel", func() bool { return len(px.Databases()["pg1"]) == 1 })
	d, ok := b.Store.Database("pg1")
	if !ok || d.AgentAddr != addr || d.HostID != agent.HostID {
		t.Fatalf("registered %+v", d)
	}
	id := identity.Identity{User: "alice", Roles: []string{"access"},
		Traits: map[string][]string{identity.TraitDBUsers: {"app"}, identity.TraitDBNames: {"postgres"}}}
	conn, err := connectSSLRequest(ctx, d.AgentAddr, w.userTLS(t, "pg1", id))
	if err != nil {
		t.Fatal(err)
	}
	var who string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&who); err != nil || who != "app" {
		t.Fatalf("got %q, %v", who, err)
	}
	conn.Close(ctx)
	// The broker's API served the join and the db-client certificate on
	// the same port: cert.issue events for the agent's host.
	waitEvent(t, w.js, "the db-client certificate issued to the agent", func(ev map[string]any) bool {
		return ev["type"] == "cert.issue" && ev["purpose"] == "agent"
	})
}

// A database registered in STATE to one host is routed to that host's
// tunnel only, even when another agent's certificate names it too: the
// other agent's tunnel is not acknowledged for it (nor announced in
// presence), only for its own databases.
func TestRoutingFollowsTheRegistration(t *testing.T) {
	cas, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := startBenchProxy(t, cas, func(name string) (string, bool) { return "agent-real", name == "pg1" })
	roots, _ := cas.Pool(ca.Host)
	agentCert := func(hostID string, names ...string) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leaf, _, err := cas.IssueHost(key.Public(), hostID, names, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	}
	serve := func(tl net.Listener, cert tls.Certificate) {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
				_ = tc.Handshake()
				_, _ = io.Copy(io.Discard, tc)
			}()
		}
	}
	dial := func() (string, error) {
		c, err := tls.Dial("tcp", p.Addr().String(), &tls.Config{ServerName: "pg1", RootCAs: roots})
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
	}
	acked := func(tl *tunnel.Listener) []string {
		for _, dbs := range tl.Connected() {
			return dbs
		}
		return nil
	}
	rogue := agentCert("agent-rogue", "pg1", "rogue1")
	tl := listenTunnel(t, cas, p.Addr().String(), "agent-rogue", []string{"pg1", "rogue1"}, rogue)
	go serve(tl, rogue)
	waitUntil(t, 10*time.Second, "the rogue tunnel", func() bool { return len(tl.Connected()) == 1 })
	if got := acked(tl); len(got) != 1 || got[0] != "rogue1" || len(p.Databases()["pg1"]) != 0 {
		t.Fatalf("the rogue's tunnel was acknowledged for %v; pg1 routed to %v", got, p.Databases()["pg1"])
	}
	if cn, err := dial(); err == nil {
		t.Fatalf("pg1 reached %s, not the host it is registered to", cn)
	}
	owner := agentCert("agent-real", "pg1")
	tl2 := listenTunnel(t, cas, p.Addr().String(), "agent-real", []string{"pg1"}, owner)
	go serve(tl2, owner)
	waitUntil(t, 10*time.Second, "the real tunnel", func() bool { return len(p.Databases()["pg1"]) == 1 })
	// The rogue connects again, last: the registration still wins.
	tl.Close()
	tl3 := listenTunnel(t, cas, p.Addr().String(), "agent-rogue", []string{"pg1", "rogue1"}, rogue)
	go serve(tl3, rogue)
	waitUntil(t, 10*time.Second, "the rogue tunnel again", func() bool { return len(tl3.Connected()) == 1 })
	if got := p.Databases()["pg1"]; len(got) != 1 || got[0] != "agent-real" {
		t.Fatalf("pg1 routed to %v", got)
	}
	if cn, err := dial(); err != nil || cn != "agent-real" {
		t.Fatalf("pg1 reached %q, %v", cn, err)
	}
}

// psql runs statements with psql through addr as the native client does:
// SSLRequest, then TLS with host as SNI, verified against the host CA,
// with a user certificate.
func (w *world) psql(t *testing.T, addr, host string, id identity.Identity, statements ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatal("psql not found: install the Debian package postgresql-client-15")
	}
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, _, err := w.cas.IssueUser(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	hostCA, _ := w.cas.CertPEM(ca.Host)
	files := map[string][]byte{
		"user.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		"user.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
		"ca.crt":   hostCA,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ip, port, _ := net.SplitHostPort(addr)
	conn := fmt.Sprintf("host=%s hostaddr=%s port=%s user=app dbname=postgres sslmode=verify-full sslcert=%s sslkey=%s sslrootcert=%s",
		host, ip, port, filepath.Join(dir, "user.crt"), filepath.Join(dir, "user.key"), filepath.Join(dir, "ca.crt"))
	args := []string{conn, "-X", "-v", "ON_ERROR_STOP=1", "-At"}
	for _, st := range statements {
		args = append(args, "-c", st)
	}
	cmd := exec.Command("psql", args...)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// An agent keeps a tunnel to each proxy it is given: with one proxy
// stopped, a session open through the other goes on and new ones start.
func TestTwoProxies(t *testing.T) {
	w := newWorld(t)
	p1, p2 := w.startProxy(t, "127.0.0.1:0"), w.startProxy(t, "127.0.0.1:0")
	cfg, err := config.Parse([]byte(`
cluster_name: test
db_service:
  proxy_addrs: [` + p1.Addr().String() + `, ` + p2.Addr().String() + `]
  databases:
    - name: pg1
      protocol: postgres
      uri: ` + w.pg.Addr() + `
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = w.dir
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agent, err := service.Start(ctx, service.Options{Config: cfg, JS: w.js, Recorder: w.pub, Log: quiet().With("component", "agent")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = agent.Wait() }()
	waitUntil(t, 10*time.Second, "both tunnels", func() bool {
		return len(p1.Databases()["pg1"]) == 1 && len(p2.Databases()["pg1"]) == 1
	})
	id := identity.Identity{User: "alice", Roles: []string{"access"},
		Traits: map[string][]string{identity.TraitDBUsers: {"app"}, identity.TraitDBNames: {"postgres"}}}
	through1, err := connectDirectTLS(ctx, p1.Addr().String(), w.userTLS(t, "pg1", id), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer through1.Close(context.Background())
	through2, err := connectDirectTLS(ctx, p2.Addr().String(), w.userTLS(t, "pg1", id), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer through2.Close(ctx)

	p1.stop()
	var n int
	if err := through1.QueryRow(ctx, "select 1").Scan(&n); err == nil {
		t.Fatal("a session through the stopped proxy still answers")
	}
	if err := through2.QueryRow(ctx, "select 2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("the session through the other proxy: %d, %v", n, err)
	}
	began := time.Now()
	c, err := connectDirectTLS(ctx, p2.Addr().String(), w.userTLS(t, "pg1", id), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, "select 3").Scan(&n); err != nil || n != 3 {
		t.Fatalf("a new session through the other proxy: %d, %v", n, err)
	}
	c.Close(ctx)
	t.Logf("a new session through the other proxy in %s", time.Since(began).Round(time.Millisecond))
	waitUntil(t, 10*time.Second, "the agent to count one tunnel", func() bool { return len(agent.Tunnels.Connected()) == 1 })
}

// The proxy renews its certificate before it expires, without a restart:
// with certificates of a few seconds, an agent still opens a tunnel (it
// verifies the proxy's certificate) after the first one expired, and the
// tunnel opened before the renewals is still routed.
func TestCertificateRenewal(t *testing.T) {
	cas, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const life = 10 * time.Second
	issue := func() (tls.Certificate, error) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leaf, _, err := cas.IssueHost(key.Public(), ca.ProxyHostID, []string{"127.0.0.1", "localhost"}, life)
		if err != nil {
			return tls.Certificate{}, err
		}
		return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, nil
	}
	first, err := issue()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hosts, _ := cas.Pool(ca.Host)
	var renewals atomic.Int32
	px, err := proxy.New(proxy.Options{Listener: ln, Cert: first, AgentCAs: hosts, Log: quiet(),
		Renew: func(context.Context) (tls.Certificate, error) { renewals.Add(1); return issue() }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- px.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	agentCert := func(host, db string) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leaf, _, err := cas.IssueHost(key.Public(), host, []string{db}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	}
	before := listenTunnel(t, cas, px.Addr().String(), "agent-before", []string{"before"}, agentCert("agent-before", "before"))
	waitUntil(t, 10*time.Second, "the first tunnel", func() bool { return len(px.Databases()["before"]) == 1 })

	// Past the first certificate's expiry (a tunnel dialed now would fail
	// on it) and after a renewal.
	waitUntil(t, 2*life, "the first certificate's expiry", func() bool { return time.Now().After(first.Leaf.NotAfter.Add(time.Second)) })
	cur := px.Certificate()
	if renewals.Load() == 0 || cur.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 || time.Now().After(cur.NotAfter) {
		t.Fatalf("after %d renewals the proxy presents serial %x, valid until %s", renewals.Load(), cur.SerialNumber, cur.NotAfter)
	}
	listenTunnel(t, cas, px.Addr().String(), "agent-after", []string{"after"}, agentCert("agent-after", "after"))
	waitUntil(t, 10*time.Second, "a tunnel after the first certificate expired", func() bool { return len(px.Databases()["after"]) == 1 })
	if got := px.Databases()["before"]; len(got) != 1 || len(before.Connected()) != 1 {
		t.Fatalf("the tunnel opened before the renewals: routed to %v, agent connected to %v", got, before.Connected())
	}
}
