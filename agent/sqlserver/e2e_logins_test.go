package sqlserver_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/sqlserver/tds"
)

// TestRDSProxyIAM puts the database "behind RDS Proxy": the agent logs in
// with an IAM token as the LOGIN7 password (scrambled as TDS wants it, over
// TLS), a new one per connection, and the token never reaches an event.
func TestRDSProxyIAM(t *testing.T) {
	var (
		mu     sync.Mutex
		tokens []string
		addr   string
	)
	check := func(user, pw string) error {
		mu.Lock()
		defer mu.Unlock()
		tokens = append(tokens, pw)
		u, err := url.Parse("https://" + pw)
		if err != nil {
			return err
		}
		q := u.Query()
		switch {
		case u.Host != addr:
			return fmt.Errorf("token for %s, want %s", u.Host, addr)
		case q.Get("DBUser") != user || user != "alice":
			return fmt.Errorf("token for user %q, login as %q", q.Get("DBUser"), user)
		case q.Get("Action") != "connect" || !strings.HasPrefix(q.Get("X-Amz-Credential"), iamKey+"/") ||
			!strings.Contains(q.Get("X-Amz-Credential"), "/eu-west-1/rds-db/aws4_request") || len(q.Get("X-Amz-Signature")) != 64:
			return fmt.Errorf("not an RDS IAM token: %q", pw)
		}
		return nil
	}
	s := newStack(t, stackOptions{iam: check})
	mu.Lock()
	addr = "localhost:" + s.tds.Addr()[strings.LastIndexByte(s.tds.Addr(), ':')+1:]
	mu.Unlock()
	ctx := context.Background()
	for range 2 {
		db, err := sql.Open("sqlserver", mssqlDSN(s.tunnel, "alice", "app", "disable"))
		if err != nil {
			t.Fatal(err)
		}
		var who string
		if err := db.QueryRowContext(ctx, "select suser_sname()").Scan(&who); err != nil || who != "alice" {
			t.Fatalf("login with an IAM token: %v %q\n%q", err, who, s.tds.Violations())
		}
		db.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(tokens) != 2 {
		t.Fatalf("%d tokens", len(tokens))
	}
	for _, l := range s.tds.Logins() {
		if l.Method != "sql" || l.User != "alice" {
			t.Fatalf("login %+v", l)
		}
	}
	evs := s.WaitAudit(t, "both sessions ended", agenttest.Count("db.session.end", 2))
	for _, l := range agenttest.OfType(evs, "db.session.sqlserver.login") {
		if l["db_auth_method"] != "rds-iam" {
			t.Fatalf("login event %v", l)
		}
	}
	for _, ev := range evs {
		for _, tok := range tokens {
			sig := tok[strings.LastIndex(tok, "X-Amz-Signature=")+len("X-Amz-Signature="):]
			if strings.Contains(fmt.Sprint(ev), sig) {
				t.Fatalf("a token reached an event: %v", ev)
			}
		}
	}
}

// TestKeytabLogin logs carol in with ad.keytab_file (gokrb5 against the
// real KDC) instead of PKINIT.
func TestKeytabLogin(t *testing.T) {
	s := newStack(t, stackOptions{keytab: true})
	db, err := sql.Open("sqlserver", mssqlDSN(s.tunnel, "carol", "app", "disable"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var who string
	if err := db.QueryRow("select suser_sname()").Scan(&who); err != nil || who != "carol@"+realm {
		t.Fatalf("keytab login: %v %q\n%q", err, who, s.tds.Violations())
	}
	db.Close()
	evs := s.WaitAudit(t, "the session ended", agenttest.Count("db.session.end", 1))
	l := agenttest.OfType(evs, "db.session.sqlserver.login")
	if len(l) != 1 || l[0]["db_auth_method"] != "kerberos-keytab" || l[0]["db_kerberos_principal"] != "carol@"+realm {
		t.Fatalf("login events %v", l)
	}
	// alice has no key in carol's keytab.
	db2, _ := sql.Open("sqlserver", mssqlDSN(s.tunnel, "alice", "app", "disable"))
	defer db2.Close()
	if err := db2.Ping(); err == nil || !strings.Contains(err.Error(), "keytab") {
		t.Fatalf("alice with carol's keytab: %v", err)
	}
}

// lockable is a stack whose lifecycle follows ls, with a raw session of
// alice's logged in as app.
func lockable(t *testing.T) (*agenttest.Locks, *stack, *rawClient) {
	ls := &agenttest.Locks{}
	s := newStack(t, stackOptions{life: ls})
	rc := s.raw(t)
	rc.login("alice", "app")
	return ls, s, rc
}

// TestLockEndsSession locks the user of a live session: the client gets a
// fatal TDS error that says so and the session ends as locked.
func TestLockEndsSession(t *testing.T) {
	ls, s, rc := lockable(t)
	rc.send(tds.PacketSQLBatch, tds.AppendSQLBatch(nil, 0, "select 1"))
	if a, err := rc.read(); err != nil || a.rows != 1 {
		t.Fatalf("select 1: %v %+v", err, a)
	}
	ls.Lock("alice@example.com", "incident 42")
	a, err := rc.read()
	if err != nil || len(a.errors) != 1 || a.errors[0].Class != 20 || !strings.Contains(a.errors[0].Text, "incident 42") {
		t.Fatalf("answer to the lock: %v %+v", err, a)
	}
	if _, err := rc.r.ReadMessage(); err == nil {
		t.Fatal("the connection stayed open")
	}
	evs := s.WaitAudit(t, "the session ended", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	if e := agenttest.OfType(evs, "db.session.end"); e[0]["reason"] != "locked" {
		t.Fatalf("end %v", e[0])
	}
	if n := len(agenttest.OfType(evs, "db.session.terminate")); n != 1 {
		t.Fatalf("%d terminate events", n)
	}
}

// TestLockAttentionStopsRequest locks the user while `waitfor delay` runs
// through the agent: the agent sends the database an Attention on the
// session's own connection and waits for its acknowledgement before it
// ends the session; the terminate event says so.
func TestLockAttentionStopsRequest(t *testing.T) {
	ls, s, rc := lockable(t)
	before := s.tds.Attentions()
	rc.send(tds.PacketSQLBatch, tds.AppendSQLBatch(nil, 0, "waitfor delay '00:01:00'"))
	// The request has reached the database once the agent recorded it.
	s.WaitAudit(t, "the waitfor was sent", agenttest.Count("db.session.query", 1))
	took := ls.LockWait(t, "alice@example.com", "incident 43", 5*time.Second, "an Attention at the database", func() bool { return s.tds.Attentions() != before })
	t.Logf("lock to the Attention at the TDS server: %s", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("the Attention came %s after the lock", took)
	}
	evs := s.WaitAudit(t, "the session ended", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	term := agenttest.OfType(evs, "db.session.terminate")
	if len(term) != 1 || term[0]["cancel"] != "attention" || term[0]["cancel_confirmed"] != true {
		t.Fatalf("terminate %v", term)
	}
	t.Logf("terminate: attention acknowledged after %.1fms", term[0]["cancel_ns"].(float64)/1e6)
	res := agenttest.OfType(evs, "db.session.result")
	if len(res) != 1 || !strings.Contains(res[0]["error"].(string), "cancelled by the agent") {
		t.Fatalf("result of the waitfor %v", res)
	}
}
