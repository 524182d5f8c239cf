package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/postgres"
	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/sessions"
	"github.com/tollgate-db/tollgate/test/harness"
)

// world is a broker (daemon.Start, with its API), a real PostgreSQL that
// trusts the broker's db-client CA, and an agent in-process with its own
// projection of STATE and a Lifecycle, as `tollgate start` wires them, on
// the agenttest stack: the broker's data dir is the stack's, so the two
// share the authorities, and the broker records on the stack's publisher.
type world struct {
	*agenttest.Stack
	t      *testing.T
	cfg    *config.Config
	broker *daemon.Broker
	stopB  context.CancelFunc
	proj   *state.Projection
	life   *agent.Lifecycle
	pg     *harness.PostgresServer
}

const rolesYAML = `
kind: role
metadata: {name: dba}
spec:
  allow:
    db_labels: {env: test}
    db_users: [app]
    db_names: ["*"]
---
kind: role
metadata: {name: dba-requester}
spec:
  allow:
    request:
      roles: [dba]
      reason_required: true
      max_duration: 1h
      pending_ttl: 10m
---
kind: role
metadata: {name: dba-reviewer}
spec:
  allow:
    review_requests:
      roles: [dba]
---
kind: role
metadata: {name: idle}
spec:
  allow:
    db_labels: {env: test}
    db_users: [app]
    db_names: ["*"]
  options:
    client_idle_timeout: 1s
`

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, Stack: agenttest.New(t, agenttest.Options{Cluster: config.DefaultCluster, AckTimeout: events.DefaultAckTimeout})}
	ctx := w.Context()
	w.cfg = config.Default()
	w.cfg.DataDir = w.Dir
	w.cfg.NATS.Embedded.StoreDir = w.NATS.StoreDir
	w.cfg.NATS.Embedded.Listen = "127.0.0.1:" + strconv.Itoa(w.NATS.Port())
	w.startBroker()
	t.Cleanup(w.stopBroker)

	admin := w.broker.Admin.As(daemon.LocalActor(), "")
	if _, err := admin.UpsertRoles(ctx, rolesYAML); err != nil {
		t.Fatal(err)
	}
	for _, u := range []state.NewUser{
		{Name: "alice", Roles: []string{"dba-requester"}},
		{Name: "bob", Roles: []string{"dba-reviewer"}},
		{Name: "carol", Roles: []string{"dba"}},
		{Name: "dave", Roles: []string{"idle"}},
		{Name: "erin", Roles: []string{"editor"}},
	} {
		if _, err := w.broker.Store.CreateUser(ctx, daemon.LocalActor(), u); err != nil {
			t.Fatal(err)
		}
	}

	w.pg = harness.PostgresWith(t, harness.PostgresOptions{TLS: harness.TLSOptions{ClientCA: w.DBClientCA(t)}, Users: []string{"app"}})

	// The agent follows STATE on its own, as an agent on another machine
	// would.
	var err error
	if w.proj, err = state.Follow(ctx, w.JS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.proj.Close)
	// The lifecycle stops before the projection it reads is closed.
	lctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	w.life = agent.NewLifecycle(w.proj, agent.LifecycleOptions{Logger: agenttest.Quiet()})
	go w.life.Run(lctx)
	w.Serve(t, agenttest.Agent{ServerConfig: agent.ServerConfig{
		Databases: []config.Database{{Name: "pg1", Protocol: "postgres", URI: w.pg.Addr(),
			StaticLabels: map[string]string{"env": "test"},
			TLS:          config.DatabaseTLS{Mode: "verify-full", CACertFile: w.pg.ServerCAFile}}},
		Authorize: agent.RoleAuthorizer(func(names []string) []access.Role {
			roles, _ := w.proj.ResolveRoles(names)
			return roles
		}),
		Engines:   map[string]agent.Engine{"postgres": postgres.New(postgres.Options{Logger: agenttest.Quiet()})},
		Logger:    agenttest.Quiet(),
		Lifecycle: w.life,
	}})
	return w
}

func (w *world) startBroker() {
	w.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	w.cfg.Proxy.Listen, w.cfg.Proxy.PublicAddr = ln.Addr().String(), ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := daemon.Start(ctx, daemon.Options{Config: w.cfg, JS: w.JS, Audit: w.Pub, Listener: ln, Log: agenttest.Quiet()})
	if err != nil {
		cancel()
		w.t.Fatal(err)
	}
	w.broker, w.stopB = b, cancel
}

func (w *world) stopBroker() {
	if w.stopB == nil {
		return
	}
	w.stopB()
	if err := w.broker.Wait(); err != nil {
		w.t.Errorf("broker: %v", err)
	}
	w.stopB = nil
}

// restartBroker stops the broker and starts a new one on the same data
// dir and streams.
func (w *world) restartBroker() {
	w.stopBroker()
	w.startBroker()
}

// cert issues a user certificate for the user's roles in the state.
func (w *world) cert(user string, ttl time.Duration) tls.Certificate {
	w.t.Helper()
	u, ok := w.broker.Store.User(user)
	if !ok {
		w.t.Fatalf("no user %s", user)
	}
	return w.Cert(w.t, identity.Identity{User: u.Name, Roles: u.Roles, Traits: u.Traits}, ttl)
}

// client is an API client of the broker presenting cert.
func (w *world) client(cert tls.Certificate) *api.Client {
	w.t.Helper()
	c, err := api.NewClient(w.broker.Addr, api.TLSConfig("127.0.0.1", w.HostCAs(w.t), &cert), "test")
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(c.Close)
	return c
}

// connect opens a PostgreSQL session through the agent with cert.
func (w *world) connect(ctx context.Context, cert tls.Certificate) (*pgconn.PgConn, error) {
	host, port, _ := net.SplitHostPort(w.Addr)
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s user=app dbname=postgres sslmode=require", host, port))
	if err != nil {
		return nil, err
	}
	cfg.TLSConfig = w.TLS(w.t, "pg1", cert)
	cfg.Fallbacks = nil
	return pgconn.ConnectConfig(ctx, cfg)
}

// caughtUp waits until the agent's projection has applied everything in
// STATE (a command's answer does not wait for the agents).
func (w *world) caughtUp(ctx context.Context) {
	w.t.Helper()
	s, err := w.JS.Stream(ctx, events.StateStream)
	if err != nil {
		w.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.proj.WaitFor(ctx, info.State.LastSeq); err != nil {
		w.t.Fatal(err)
	}
}

// stored reads every event of a stream, validating each against its
// checked-in JSON Schema.
func (w *world) stored(_ context.Context, stream string) []map[string]any {
	w.t.Helper()
	return agenttest.Stored(w.t, w.JS, stream)
}

// waitEnded blocks until the server ends the session and returns what it
// said.
func waitEnded(ctx context.Context, t *testing.T, c *pgconn.PgConn) *pgconn.PgError {
	t.Helper()
	err := c.WaitForNotification(ctx)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("the session should have ended with an ErrorResponse, got %v", err)
	}
	return pe
}

func execSQL(ctx context.Context, t *testing.T, c *pgconn.PgConn, sql string) {
	t.Helper()
	if _, err := c.Exec(ctx, sql).ReadAll(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestAccessRequestEndToEnd: a user who cannot reach the database asks for
// dba, a reviewer approves, the user reissues a certificate with dba and
// opens a session, the grant runs out and the agent ends the live session
// with a message saying so; every step is an event that matches its
// schema, and the session replays statement by statement. A restarted
// broker lists the requests and sessions exactly as before.
func TestAccessRequestEndToEnd(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	alice, bob := w.cert("alice", time.Hour), w.cert("bob", time.Hour)
	ac, bc := w.client(alice), w.client(bob)

	// Without dba, alice is refused by the agent.
	if _, err := w.connect(ctx, alice); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("alice without dba: want access denied, got %v", err)
	}
	// The rules: a reason is required, only dba may be requested, and no
	// longer than the role's max_duration.
	for _, bad := range []api.CreateAccessRequest{
		{Roles: []string{"dba"}},
		{Roles: []string{"dba-reviewer"}, Reason: "x"},
		{Roles: []string{"dba"}, Reason: "x", MaxDuration: api.Duration(2 * time.Hour)},
	} {
		if _, err := ac.CreateAccessRequest(ctx, bad); err == nil {
			t.Fatalf("request %+v was accepted", bad)
		}
	}
	req, err := ac.CreateAccessRequest(ctx, api.CreateAccessRequest{Roles: []string{"dba"}, Reason: "INC-42: fix the orders table",
		MaxDuration: api.Duration(4 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if req.State != "pending" || req.ApprovalsNeeded != 1 {
		t.Fatalf("new request: %+v", req)
	}
	// Nobody approves their own request, and a request is not a grant.
	if _, err := ac.ReviewAccessRequest(ctx, req.ID, api.ReviewAccessRequest{Verdict: "approve"}); err == nil || !strings.Contains(err.Error(), "own") {
		t.Fatalf("self-approval: %v", err)
	}
	if _, err := ac.ReissueAccess(ctx, api.ReissueAccessRequest{PublicKey: pubKey(t), RequestIDs: []string{req.ID}}); err == nil {
		t.Fatal("a pending request granted a certificate")
	}
	got, err := bc.ReviewAccessRequest(ctx, req.ID, api.ReviewAccessRequest{Verdict: "approve", Reason: "ok for INC-42"})
	if err != nil {
		t.Fatal(err)
	}
	if got.State != "approved" {
		t.Fatalf("after bob's approval: %s", got.State)
	}

	// alice reissues with the request: dba, no longer than the grant.
	key := agenttest.Key(t)
	pk, _ := api.EncodePublicKey(key.Public())
	res, err := ac.ReissueAccess(ctx, api.ReissueAccessRequest{PublicKey: pk, RequestIDs: []string{req.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Identity.Roles, "dba") || !slices.Equal(res.Identity.AccessRequests, []string{req.ID}) {
		t.Fatalf("reissued identity: %+v", res.Identity)
	}
	if res.Identity.Expires.After(got.Expires) {
		t.Fatalf("certificate until %s outlives the grant until %s", res.Identity.Expires, got.Expires)
	}
	blk, _ := pem.Decode([]byte(res.CertPEM))
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	granted := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	// A certificate with the request but for bob is refused.
	if _, err := bc.ReissueAccess(ctx, api.ReissueAccessRequest{PublicKey: pk, RequestIDs: []string{req.ID}}); err == nil {
		t.Fatal("bob used alice's request")
	}

	w.caughtUp(ctx)
	conn, err := w.connect(ctx, granted)
	if err != nil {
		t.Fatalf("alice with dba: %v", err)
	}
	defer conn.Close(context.Background())
	stmts := []string{"create table orders (id int primary key, total numeric)", "insert into orders values (1, 9.5), (2, 20)", "select * from orders order by id"}
	for _, s := range stmts {
		execSQL(ctx, t, conn, s)
	}
	// The grant ends while the session is idle: the agent ends it.
	pe := waitEnded(ctx, t, conn)
	if pe.Severity != "FATAL" || pe.Code != "57P01" || !strings.Contains(pe.Message, "access granted by request "+req.ID) {
		t.Fatalf("end of grant: %s %s %q", pe.Severity, pe.Code, pe.Message)
	}
	t.Logf("client was told: %s %s: %s", pe.Severity, pe.Code, pe.Message)

	// Every step is an event matching its schema.
	var sid string
	deadline := time.Now().Add(10 * time.Second)
	for {
		audit := w.stored(ctx, events.AuditStream)
		ends := agenttest.OfType(audit, "db.session.end")
		if len(ends) == 1 {
			if ends[0]["reason"] != events.EndAccessExpired {
				t.Fatalf("db.session.end reason %v", ends[0]["reason"])
			}
			sid = ends[0]["sid"].(string)
			terms := agenttest.OfType(audit, "db.session.terminate")
			if len(terms) != 1 || terms[0]["request_id"] != req.ID || terms[0]["sid"] != sid {
				t.Fatalf("db.session.terminate: %v", terms)
			}
			var purposes []string
			for _, ci := range agenttest.OfType(audit, "cert.issue") {
				purposes = append(purposes, ci["purpose"].(string))
			}
			if !slices.Contains(purposes, events.IssueReissue) {
				t.Fatalf("no reissue among cert.issue events: %v", purposes)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no db.session.end after the grant ended (%d ends)", len(ends))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The broker records the end of the grant as the request's expiry.
	var stateTypes []string
	for time.Now().Before(deadline) {
		stateTypes = stateTypes[:0]
		for _, ev := range w.stored(ctx, events.StateStream) {
			if strings.HasPrefix(ev["type"].(string), "access_request.") {
				stateTypes = append(stateTypes, fmt.Sprintf("%s:%v", ev["type"], ev["state"]))
			}
		}
		if len(stateTypes) == 4 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := []string{"access_request.create:<nil>", "access_request.review:<nil>", "access_request.update:approved", "access_request.update:expired"}
	if !slices.Equal(stateTypes, want) {
		t.Fatalf("access request events %v, want %v", stateTypes, want)
	}

	// The replay shows the statements in order, read from the session's
	// own subject.
	tl, err := sessions.Load(ctx, w.JS, sid)
	if err != nil {
		t.Fatal(err)
	}
	var replayed []string
	for _, s := range tl.Statements() {
		replayed = append(replayed, s.Query)
		if len(s.Results) != 1 || !s.Results[0].Success {
			t.Fatalf("statement %q: results %+v", s.Query, s.Results)
		}
	}
	if !slices.Equal(replayed, stmts) || len(tl.Missing) != 0 {
		t.Fatalf("replayed %q (missing ei %v), want %q", replayed, tl.Missing, stmts)
	}
	var text strings.Builder
	if err := tl.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "TERMINATE access request expired") {
		t.Fatalf("timeline text lacks the termination:\n%s", text.String())
	}
	t.Logf("replay:\n%s", text.String())

	// An editor reads the same over the API (tollgate sessions --identity).
	ec := w.client(w.cert("erin", time.Hour))
	var remote []sessions.Session
	if err := ec.Sessions(ctx, false, "alice", "", &remote); err != nil {
		t.Fatal(err)
	}
	local, err := sessions.List(ctx, w.JS, sessions.Filter{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	rj, _ := json.Marshal(remote)
	lj, _ := json.Marshal(local)
	if string(rj) != string(lj) || len(remote) != 2 { // the refused session and the granted one
		t.Fatalf("sessions over the API:\n%s\nlocally:\n%s", rj, lj)
	}
	var rtl sessions.Timeline
	if err := ec.SessionTimeline(ctx, sid, &rtl); err != nil {
		t.Fatal(err)
	}
	if len(rtl.Statements()) != len(stmts) {
		t.Fatalf("timeline over the API: %d statements", len(rtl.Statements()))
	}
	if err := ac.SessionTimeline(ctx, sid, &rtl); err == nil || !strings.Contains(err.Error(), "editor") {
		t.Fatalf("a non-editor read a timeline: %v", err)
	}

	// A restarted broker answers exactly as before.
	before := w.answers(ctx, bc)
	w.restartBroker()
	after := w.answers(ctx, w.client(bob))
	if before != after {
		t.Fatalf("after a restart the broker answers\n%s\ninstead of\n%s", after, before)
	}
}

// answers is what the broker says to requests ls and sessions ls.
func (w *world) answers(ctx context.Context, c *api.Client) string {
	w.t.Helper()
	rs, err := c.AccessRequests(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	ss, err := sessions.List(ctx, w.JS, sessions.Filter{})
	if err != nil {
		w.t.Fatal(err)
	}
	if len(rs) == 0 || len(ss) == 0 {
		w.t.Fatalf("nothing to compare: %d requests, %d sessions", len(rs), len(ss))
	}
	b, _ := json.MarshalIndent(map[string]any{"requests": rs, "sessions": ss}, "", " ")
	return string(b)
}

func pubKey(t *testing.T) string {
	s, err := api.EncodePublicKey(agenttest.Key(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLockEndsLiveSessions: a lock on the user ends a live session at once
// with the lock's message as a FATAL ErrorResponse, and new sessions are
// refused while it holds. Lock-to-disconnect is measured over 20 trials
// and logged (no timing is asserted).
func TestLockEndsLiveSessions(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	carol := w.cert("carol", time.Hour)
	by := daemon.LocalActor()
	const trials = 20
	var lat []time.Duration
	for i := 0; i < trials; i++ {
		conn, err := w.connect(ctx, carol)
		if err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
		execSQL(ctx, t, conn, "select 1")
		msg := fmt.Sprintf("incident %d: access suspended", i)
		start := time.Now()
		lk, err := w.broker.Store.CreateLock(ctx, by, state.NewLock{TargetUser: "carol", Message: msg})
		if err != nil {
			t.Fatal(err)
		}
		pe := waitEnded(ctx, t, conn)
		lat = append(lat, time.Since(start))
		conn.Close(ctx)
		if pe.Code != "57P01" || !strings.Contains(pe.Message, "user carol is locked: "+msg) {
			t.Fatalf("trial %d: %s %q", i, pe.Code, pe.Message)
		}
		if i == 0 {
			// While the lock holds, a new session is refused, saying why.
			w.caughtUp(ctx)
			_, err := w.connect(ctx, carol)
			if err == nil || !strings.Contains(err.Error(), msg) {
				t.Fatalf("new session under a lock: %v", err)
			}
		}
		if err := w.broker.Store.DeleteLock(ctx, by, lk.ID); err != nil {
			t.Fatal(err)
		}
		w.caughtUp(ctx)
	}
	// psql too: the lock ends its session, and psql shows the message at
	// its next command.
	psql, err := lookPath("psql")
	if err != nil {
		t.Fatal(err)
	}
	crt, key := agenttest.WriteCert(t, w.Dir, "carol", carol)
	caFile := w.HostCAFile
	host, port, _ := net.SplitHostPort(w.Addr)
	cmd := exec.CommandContext(ctx, psql, "-X", "-A", "-t", fmt.Sprintf("host=%s port=%s user=app dbname=postgres sslmode=verify-ca sslrootcert=%s sslcert=%s sslkey=%s gssencmode=disable",
		host, port, caFile, crt, key))
	stdin, _ := cmd.StdinPipe()
	var stdout, stderr safeBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(stdin, "select 'before the lock';\n")
	for !strings.Contains(stdout.String(), "before the lock") {
		if ctx.Err() != nil {
			t.Fatalf("psql: %s %s", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := len(w.life.Live())
	lk, err := w.broker.Store.CreateLock(ctx, by, state.NewLock{TargetUser: "carol", Message: "psql stopped"})
	if err != nil {
		t.Fatal(err)
	}
	for len(w.life.Live()) >= before && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	_, _ = io.WriteString(stdin, "select 'after the lock';\n")
	stdin.Close()
	_ = cmd.Wait()
	if !strings.Contains(stderr.String(), "FATAL:  tollgate: session ended: user carol is locked: psql stopped") || strings.Contains(stdout.String(), "after the lock") {
		t.Fatalf("psql after the lock: stdout %q stderr %q", stdout.String(), stderr.String())
	}
	t.Logf("psql said: %s", strings.TrimSpace(stderr.String()))
	_ = w.broker.Store.DeleteLock(ctx, by, lk.ID)

	sorted := slices.Clone(lat)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	t.Logf("lock-to-disconnect over %d trials: median %s, max %s, min %s", trials,
		sorted[trials/2].Round(time.Microsecond), sorted[trials-1].Round(time.Microsecond), sorted[0].Round(time.Microsecond))

	// Every ending is recorded: a terminate and an end with reason locked
	// per trial, and the refused session as a denied start.
	deadline := time.Now().Add(10 * time.Second)
	for {
		audit := w.stored(ctx, events.AuditStream)
		ends, terms := agenttest.OfType(audit, "db.session.end"), agenttest.OfType(audit, "db.session.terminate")
		if len(ends) == trials+1 {
			for _, e := range ends {
				if e["reason"] != events.EndLocked {
					t.Fatalf("end reason %v", e["reason"])
				}
			}
			if len(terms) != trials+1 {
				t.Fatalf("%d terminate events for %d trials", len(terms), trials)
			}
			denied := 0
			for _, s := range agenttest.OfType(audit, "db.session.start") {
				if s["success"] == false && strings.HasPrefix(s["rule"].(string), "lock ") {
					denied++
				}
			}
			if denied != 1 {
				t.Fatalf("%d sessions refused under a lock, want 1", denied)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d session ends for %d trials and psql", len(ends), trials)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSessionLife: a role's client_idle_timeout ends a silent session with
// PostgreSQL's own idle-session SQLSTATE; a session outliving its
// certificate ends (disconnect_expired_cert is on by default); a lock on
// one session ends that session and no other of the same user.
func TestSessionLife(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	idle, err := w.connect(ctx, w.cert("dave", time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close(ctx)
	short, err := w.connect(ctx, w.cert("carol", 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close(ctx)
	carol := w.cert("carol", time.Hour)
	a, err := w.connect(ctx, carol)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	b, err := w.connect(ctx, carol)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	for _, c := range []*pgconn.PgConn{idle, short, a, b} {
		execSQL(ctx, t, c, "select 1")
	}

	pe := waitEnded(ctx, t, idle)
	if pe.Code != "57P05" || !strings.Contains(pe.Message, "client_idle_timeout 1s") {
		t.Fatalf("idle: %s %q", pe.Code, pe.Message)
	}
	pe = waitEnded(ctx, t, short)
	if pe.Code != "57P01" || !strings.Contains(pe.Message, "the certificate of carol expired") {
		t.Fatalf("expired certificate: %s %q", pe.Code, pe.Message)
	}

	// Find a's session by its client address, as sessions ls shows it.
	ss, err := sessions.List(ctx, w.JS, sessions.Filter{LiveOnly: true, User: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	var sidA string
	for _, s := range ss {
		if s.ClientAddr == a.Conn().LocalAddr().String() {
			sidA = s.SID
		}
	}
	if sidA == "" {
		t.Fatalf("no live session from %s among %+v", a.Conn().LocalAddr(), ss)
	}
	if _, err := w.broker.Store.CreateLock(ctx, daemon.LocalActor(), state.NewLock{TargetSession: sidA, Message: "this one only"}); err != nil {
		t.Fatal(err)
	}
	pe = waitEnded(ctx, t, a)
	if !strings.Contains(pe.Message, "this session is locked: this one only") {
		t.Fatalf("session lock: %q", pe.Message)
	}
	execSQL(ctx, t, b, "select 'still here'")

	// The endings are in the audit trail with their reasons.
	deadline := time.Now().Add(10 * time.Second)
	for {
		reasons := map[string]int{}
		for _, e := range agenttest.OfType(w.stored(ctx, events.AuditStream), "db.session.end") {
			reasons[e["reason"].(string)]++
		}
		if reasons[events.EndIdleTimeout] == 1 && reasons[events.EndCertExpired] == 1 && reasons[events.EndLocked] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("end reasons %v", reasons)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReplayExecutePgbench: a pgbench run through the agent, replayed on a
// fresh copy of the database it started from, gives the same results.
func TestReplayExecutePgbench(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pgbench, err := lookPath("pgbench")
	if err != nil {
		t.Fatal(err)
	}
	w.pg.MustExec(t, "create database bench owner app")
	sock := fmt.Sprintf("host=%s port=%d user=postgres sslmode=disable", w.pg.SocketDir, w.pg.Port())
	if out, err := runCmd(ctx, pgbench, "-i", "-q", "-s", "1", sock+" dbname=bench"); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	w.pg.MustExec(t, "create database benchcopy template bench")
	cpgExec(ctx, t, sock+" dbname=bench", "grant all on all tables in schema public to app")

	carol := w.cert("carol", time.Hour)
	crt, key := agenttest.WriteCert(t, w.Dir, "carol", carol)
	caFile := w.HostCAFile
	host, port, _ := net.SplitHostPort(w.Addr)
	dsn := fmt.Sprintf("host=%s port=%s user=app dbname=bench sslmode=verify-ca sslrootcert=%s sslcert=%s sslkey=%s gssencmode=disable",
		host, port, caFile, crt, key)
	if out, err := runCmd(ctx, pgbench, "-n", "-t", "20", "-c", "1", dsn); err != nil {
		t.Fatalf("pgbench through the agent: %v\n%s", err, out)
	}
	// pgbench opens a session to look at the tables, then one per client:
	// the run is the client's, the one with the most statements, once
	// both ended.
	var sid string
	deadline := time.Now().Add(10 * time.Second)
	for sid == "" {
		ss, err := sessions.List(ctx, w.JS, sessions.Filter{Database: "pg1", User: "carol"})
		if err != nil {
			t.Fatal(err)
		}
		ended, most := 0, uint64(0)
		for _, s := range ss {
			if s.DBName == "bench" && !s.End.IsZero() {
				ended++
				if s.Statements > most {
					sid, most = s.SID, s.Statements
				}
			}
		}
		if ended < 2 {
			sid = ""
		}
		if sid == "" && time.Now().After(deadline) {
			t.Fatalf("pgbench's two sessions did not both end: %+v", ss)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tl, err := sessions.Load(ctx, w.JS, sid)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := sessions.Execute(ctx, tl, sessions.ExecOptions{Target: sock + " dbname=benchcopy", Pace: sessions.PaceFast})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Statements < 20*7 {
		t.Fatalf("%d statements replayed; pgbench -t 20 sends at least 140", rep.Statements)
	}
	var out strings.Builder
	_ = rep.WriteText(&out)
	if rep.Differences != 0 {
		t.Fatalf("replay on a fresh copy differs:\n%s", out.String())
	}
	t.Log(out.String())
	// On a database without pgbench's tables every statement differs, and
	// the report says how.
	rep2, err := sessions.Execute(ctx, tl, sessions.ExecOptions{Target: sock + " dbname=postgres"})
	if err != nil {
		t.Fatal(err)
	}
	missing := 0
	for _, o := range rep2.Outcomes {
		if strings.Contains(o.Difference, "42P01") {
			missing++
		}
	}
	if rep2.Differences == 0 || missing == 0 {
		var b strings.Builder
		_ = rep2.WriteText(&b)
		t.Fatalf("replay on a database without the tables: %d differences, %d naming 42P01 (undefined table):\n%s", rep2.Differences, missing, b.String())
	}
}

// safeBuffer is a bytes.Buffer safe for a process writing while the test
// reads.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func lookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found: install the Debian package postgresql-client: %w", name, err)
	}
	return p, nil
}

func runCmd(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func cpgExec(ctx context.Context, t *testing.T, dsn, sql string) {
	t.Helper()
	c, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql).ReadAll(); err != nil {
		t.Fatal(err)
	}
}
