package proxy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent/service"
	"github.com/tollgate-db/tollgate/broker/admin"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/proxy"
)

// presenceOf makes the PRESENCE bucket of w and follows it.
func (w *world) presenceOf(t *testing.T) (jetstream.KeyValue, *presence.View) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := presence.Ensure(ctx, w.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	v, err := presence.Watch(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	return kv, v
}

// announced gives a proxy its presence: id, its own address, and the view
// of every proxy's routes.
func announced(kv jetstream.KeyValue, v *presence.View, id string) func(*proxy.Options) {
	return func(o *proxy.Options) {
		o.Presence = presence.NewAnnouncer(kv, id, o.Listener.Addr().String(), 0, quiet())
		o.View = v
	}
}

var alice = identity.Identity{User: "alice", Roles: []string{"access"},
	Traits: map[string][]string{identity.TraitDBUsers: {"app"}, identity.TraitDBNames: {"postgres"}}}

// High availability: an agent given one proxy learns the other from
// presence and keeps a tunnel to both; presence says which proxies route
// its database and db ls says online; with one proxy stopped, a session
// through the other goes on and new ones start at once; with the agent
// gone, the database is offline: a client gets the offline alert, an
// event records it, and nothing reaches PostgreSQL.
func TestPresenceHighAvailability(t *testing.T) {
	w := newWorld(t)
	kv, view := w.presenceOf(t)
	p1 := w.startProxy(t, "127.0.0.1:0", announced(kv, view, "proxy-1"))
	p2 := w.startProxy(t, "127.0.0.1:0", announced(kv, view, "proxy-2"))
	cfg, err := config.Parse([]byte(`
cluster_name: test
db_service:
  proxy_addrs: [` + p1.Addr().String() + `]
  databases:
    - name: pg1
      protocol: postgres
      uri: ` + w.pg.Addr() + `
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = w.dir
	ctx := context.Background()
	actx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	agent, err := service.Start(actx, service.Options{Config: cfg, JS: w.js, Recorder: w.pub, Log: quiet().With("component", "agent")})
	if err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Wait() }()
	waitUntil(t, 15*time.Second, "a tunnel to the proxy the agent was not given", func() bool {
		return len(p1.Databases()["pg1"]) == 1 && len(p2.Databases()["pg1"]) == 1
	})
	waitUntil(t, 5*time.Second, "both routes in presence", func() bool {
		return slices.Equal(view.ProxyIDs("pg1"), []string{"proxy-1", "proxy-2"})
	})
	if r := view.Routes("pg1")[0]; r.HostID != agent.HostID {
		t.Fatalf("route %+v, want host %s", r, agent.HostID)
	}
	adm := admin.New(w.store, w.cas, nil, p1.Addr().String())
	adm.SetPresence(view)
	status := func() (bool, []string) {
		d, _ := w.store.Database("pg1")
		ad := adm.Database(d, time.Now())
		return ad.Online, ad.Proxies
	}
	if on, px := status(); !on || !slices.Equal(px, []string{"proxy-1", "proxy-2"}) {
		t.Fatalf("db ls: online %v through %v", on, px)
	}

	through1, err := connectDirectTLS(ctx, p1.Addr().String(), w.userTLS(t, "pg1", alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer through1.Close(ctx)
	through2, err := connectSSLRequest(ctx, p2.Addr().String(), w.userTLS(t, "pg1", alice))
	if err != nil {
		t.Fatal(err)
	}
	defer through2.Close(ctx)

	p1.stop()
	stopped := time.Now()
	var n int
	if err := through2.QueryRow(ctx, "select 2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("the session through the other proxy: %d, %v", n, err)
	}
	c, err := connectSSLRequest(ctx, p2.Addr().String(), w.userTLS(t, "pg1", alice))
	if err != nil {
		t.Fatalf("a new session through the other proxy: %v", err)
	}
	if err := c.QueryRow(ctx, "select 3").Scan(&n); err != nil || n != 3 {
		t.Fatalf("a new session through the other proxy: %d, %v", n, err)
	}
	c.Close(ctx)
	took := time.Since(stopped)
	t.Logf("a new session through the other proxy answered %s after the first stopped", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("a new session took %s after a proxy stopped, want under 1s", took)
	}
	if err := through1.QueryRow(ctx, "select 1").Scan(&n); err == nil {
		t.Fatal("a session through the stopped proxy still answers")
	}
	waitUntil(t, 5*time.Second, "the stopped proxy gone from presence", func() bool {
		_, px := status()
		return slices.Equal(px, []string{"proxy-2"}) && len(view.Proxies()) == 1
	})
	if on, _ := status(); !on {
		t.Fatal("db ls: offline with a proxy still routing")
	}
	through2.Close(ctx)

	// The agent stops: its tunnel closes, its route goes, the database
	// is offline.
	stopAgent()
	gone := time.Now()
	<-agentDone
	waitUntil(t, 5*time.Second, "pg1 offline", func() bool { on, _ := status(); return !on })
	t.Logf("pg1 offline in presence %s after its agent stopped", time.Since(gone).Round(time.Millisecond))
	before, err := w.pg.StatementLog()
	if err != nil {
		t.Fatal(err)
	}
	_, err = connectSSLRequest(ctx, p2.Addr().String(), w.userTLS(t, "pg1", alice))
	if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
		t.Fatalf("a connection to the offline database: %v, want the TLS alert unrecognized_name", err)
	}
	_, err = connectDirectTLS(ctx, p2.Addr().String(), w.userTLS(t, "pg1", alice), nil)
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || !strings.Contains(op.Err.Error(), "unrecognized name") {
		t.Fatalf("TLS from the first byte to the offline database: %v", err)
	}
	ev := waitEvent(t, w.js, "the offline refusal", func(ev map[string]any) bool {
		return ev["type"] == "db.session.rejected" && ev["reason"] == events.RejectOffline
	})
	if ev["db_service"] != "pg1" || !strings.Contains(ev["error"].(string), "database pg1 is offline: no agent connected") {
		t.Fatalf("refusal event %v", ev)
	}
	if after, err := w.pg.StatementLog(); err != nil || len(after) != len(before) {
		t.Fatalf("PostgreSQL logged %d statements while pg1 was offline (%v)", len(after)-len(before), err)
	}
}

// A proxy without a tunnel of the agent routes through the proxy that
// has one, as presence names it: the client's bytes reach the agent
// unread, and the agent sees the client's own address.
func TestForwardThroughPresence(t *testing.T) {
	w := newWorld(t)
	kv, view := w.presenceOf(t)
	p1 := w.startProxy(t, "127.0.0.1:0", announced(kv, view, "proxy-1"))
	p2 := w.startProxy(t, "127.0.0.1:0", announced(kv, view, "proxy-2"))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _, err := w.cas.IssueHost(key.Public(), "agent-a", []string{"pgx"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	// Tunneled to p1 alone, without learning p2.
	tl := listenTunnel(t, w.cas, p1.Addr().String(), "agent-a", []string{"pgx"}, cert)
	seen := make(chan string, 4)
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				seen <- c.RemoteAddr().String()
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
				if tc.Handshake() == nil {
					_, _ = io.Copy(tc, tc)
				}
			}()
		}
	}()
	waitUntil(t, 10*time.Second, "the route through proxy-1", func() bool {
		return slices.Equal(view.ProxyIDs("pgx"), []string{"proxy-1"})
	})
	if len(p2.Databases()["pgx"]) != 0 {
		t.Fatal("proxy-2 holds a tunnel of agent-a")
	}
	roots, _ := w.cas.Pool(ca.Host)
	c, err := tls.Dial("tcp", p2.Addr().String(), &tls.Config{ServerName: "pgx", RootCAs: roots})
	if err != nil {
		t.Fatalf("pgx through proxy-2: %v", err)
	}
	defer c.Close()
	if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "agent-a" {
		t.Fatalf("reached %q", cn)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q, %v", buf, err)
	}
	if got := <-seen; got != c.LocalAddr().String() {
		t.Fatalf("the agent saw the client as %s, want %s", got, c.LocalAddr())
	}
	// A host certificate that is not a proxy's cannot forward.
	fc, err := tls.Dial("tcp", p1.Addr().String(), &tls.Config{ServerName: "127.0.0.1", RootCAs: roots,
		Certificates: []tls.Certificate{cert}, NextProtos: []string{proxy.PeerALPN}})
	if err == nil {
		_ = fc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = fc.Read(make([]byte, 1))
		fc.Close()
	}
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("an agent's certificate forwarding: %v", err)
	}
}

// A PostgreSQL cancel request travels, like the session, inside TLS with
// the database as SNI (as tg's tunnel and pgx with a TLS dialer send it):
// the proxy routes it to the agent holding the session, which cancels
// the running statement in the database.
func TestCancelThroughTheProxy(t *testing.T) {
	w := newWorld(t)
	kv, view := w.presenceOf(t)
	p := w.startProxy(t, "127.0.0.1:0", announced(kv, view, "proxy-1"))
	cfg, err := config.Parse([]byte(`
cluster_name: test
db_service:
  proxy_addrs: [` + p.Addr().String() + `]
  databases:
    - name: pg1
      protocol: postgres
      uri: ` + w.pg.Addr() + `
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = w.dir
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	actx, stopAgent := context.WithCancel(ctx)
	agent, err := service.Start(actx, service.Options{Config: cfg, JS: w.js, Recorder: w.pub, Log: quiet().With("component", "agent")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { stopAgent(); _ = agent.Wait() }()
	waitUntil(t, 10*time.Second, "the tunnel", func() bool { return len(p.Databases()["pg1"]) == 1 })
	admin, err := pgconn.Connect(ctx, w.pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	conn, err := connectDirectTLS(ctx, p.Addr().String(), w.userTLS(t, "pg1", alice), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	sleeping := func() string {
		res, err := admin.Exec(ctx, "select count(*) from pg_stat_activity where query like 'select pg_sleep(30)%' and state = 'active'").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return string(res[0].Rows[0][0])
	}
	began := time.Now()
	errc := make(chan error, 1)
	go func() { _, err := conn.Exec(ctx, "select pg_sleep(30)"); errc <- err }()
	waitUntil(t, 10*time.Second, "pg_sleep running", func() bool { return sleeping() == "1" })
	// pgx sends the cancel request through its dialer: TLS to the proxy
	// with SNI pg1, on a connection of its own.
	cancelled := time.Now()
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			t.Fatalf("pg_sleep ended with %v, want 57014 query_canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("pg_sleep still running 20s after the cancel")
	}
	// Cancelled, not disconnected: the session goes on.
	var n int
	if err := conn.QueryRow(ctx, "select 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("the session after the cancel: %d, %v", n, err)
	}
	if got := sleeping(); got != "0" {
		t.Fatalf("%s pg_sleep still running", got)
	}
	t.Logf("pg_sleep(30) cancelled through the proxy %s after the request (%s after it began)",
		time.Since(cancelled).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
}

// A cancel request sent without TLS, as libpq before 17 and pgx with
// sslmode=require send it, names no database: the proxy offers it to
// every agent it holds a tunnel of and the one whose key it is cancels
// the statement and records it. A key no agent issued is recorded once,
// by the proxy, and by no agent.
func TestPlaintextCancelThroughTheProxy(t *testing.T) {
	w := newWorld(t)
	kv, view := w.presenceOf(t)
	p := w.startProxy(t, "127.0.0.1:0", announced(kv, view, "proxy-1"))
	cfg, err := config.Parse([]byte(`
cluster_name: test
db_service:
  proxy_addrs: [` + p.Addr().String() + `]
  databases:
    - name: pg1
      protocol: postgres
      uri: ` + w.pg.Addr() + `
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = w.dir
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	actx, stopAgent := context.WithCancel(ctx)
	agent, err := service.Start(actx, service.Options{Config: cfg, JS: w.js, Recorder: w.pub, Log: quiet().With("component", "agent")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { stopAgent(); _ = agent.Wait() }()
	waitUntil(t, 10*time.Second, "the tunnel", func() bool { return len(p.Databases()["pg1"]) == 1 })
	conn, err := connectSSLRequest(ctx, p.Addr().String(), w.userTLS(t, "pg1", alice))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	errc := make(chan error, 1)
	go func() { _, err := conn.Exec(ctx, "select pg_sleep(30)"); errc <- err }()
	admin, err := pgconn.Connect(ctx, w.pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	waitUntil(t, 10*time.Second, "pg_sleep running", func() bool {
		res, err := admin.Exec(ctx, "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'").ReadAll()
		return err == nil && string(res[0].Rows[0][0]) == "1"
	})
	// The request as libpq 15 sends it: plain TCP, the 16 bytes, no SNI.
	sendCancel := func(pid uint32, secret []byte) {
		t.Helper()
		c, err := net.Dial("tcp", p.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := binary.BigEndian.AppendUint32([]byte{0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e}, pid)
		if _, err := c.Write(append(msg, secret...)); err != nil {
			t.Fatal(err)
		}
		// The proxy answers nothing and closes, as a server does.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || n > 0 {
			t.Fatalf("the proxy answered a cancel request: %d bytes, %v", n, err)
		}
	}
	if len(conn.PgConn().SecretKey()) != 4 {
		t.Fatalf("a secret of %d bytes, want protocol 3.0's 4", len(conn.PgConn().SecretKey()))
	}
	began := time.Now()
	sendCancel(conn.PgConn().PID(), conn.PgConn().SecretKey())
	select {
	case err := <-errc:
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			t.Fatalf("pg_sleep ended with %v, want 57014 query_canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("pg_sleep still running 20s after the cancel")
	}
	t.Logf("pg_sleep(30) cancelled by a plaintext cancel request through the proxy in %s", time.Since(began).Round(time.Millisecond))
	var n int
	if err := conn.QueryRow(ctx, "select 8").Scan(&n); err != nil || n != 8 {
		t.Fatalf("the session after the cancel: %d, %v", n, err)
	}
	waitEvent(t, w.js, "the agent's record of the cancel", func(ev map[string]any) bool {
		return ev["type"] == "db.session.postgres.cancel" && ev["success"] == true && ev["tls"] != true
	})

	// A key no agent issued.
	sendCancel(12345, []byte{1, 2, 3, 4})
	ev := waitEvent(t, w.js, "the proxy's record of the unknown key", func(ev map[string]any) bool {
		return ev["type"] == "db.session.rejected" && ev["reason"] == events.RejectUnknownCancelKey
	})
	if !strings.Contains(ev["error"].(string), "backend 12345") || !strings.Contains(ev["error"].(string), "no agent connected to this proxy") {
		t.Fatalf("refusal %v", ev)
	}
	n = 0
	for _, ev := range audit(t, w.js) {
		if ev["type"] == "db.session.rejected" && ev["reason"] == events.RejectUnknownCancelKey {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d records of one unknown cancel key, want the proxy's alone", n)
	}
}
