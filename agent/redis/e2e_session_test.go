package redis_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

// rawConn is a RESP connection to the agent that reads replies as lines.
type rawConn struct {
	t  testing.TB
	c  *tls.Conn
	br *bufio.Reader
}

func (s *stack) raw(t testing.TB) *rawConn {
	c, err := tls.Dial("tcp", s.Addr, s.agentTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(cmds ...string) {
	r.t.Helper()
	var b strings.Builder
	for _, c := range cmds {
		b.WriteString(c + "\r\n")
	}
	if _, err := r.c.Write([]byte(b.String())); err != nil {
		r.t.Fatal(err)
	}
}

// lines reads n reply lines.
func (r *rawConn) lines(n int) []string {
	r.t.Helper()
	var out []string
	for range n {
		l, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatalf("after %q: %v", out, err)
		}
		out = append(out, strings.TrimSuffix(l, "\r\n"))
	}
	return out
}

// TestTransactionWithRefusal: a command the agent refuses inside MULTI
// aborts the transaction as Redis aborts one with a command it could not
// queue: EXEC gets EXECABORT and nothing of it runs.
func TestTransactionWithRefusal(t *testing.T) {
	s := newStack(t, stackOptions{})
	r := s.raw(t)
	// Inline commands, pipelined in one write.
	r.send("AUTH app pw", "MULTI", "SET t1 1", "SELECT 9", "SET t2 2", "EXEC", "EXISTS t1 t2", "MULTI", "SET t3 3", "EXEC")
	got := r.lines(11)
	want := []string{"+OK", "+OK", "+QUEUED", "-NOPERM tollgate: access denied", "+QUEUED",
		"-EXECABORT Transaction discarded because of previous errors.", ":0", "+OK", "+QUEUED", "*1", "+OK"}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Fatalf("reply %d: %q, want %q (all: %q)", i+1, got[i], w, got)
		}
	}
	r.c.Close()
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	var execTags []string
	for _, e := range agenttest.OfType(evs, "db.session.result") {
		if tag, _ := e["db_command_tag"].(string); strings.HasPrefix(tag, "EXEC") {
			code, _ := e["db_error_code"].(string)
			execTags = append(execTags, tag+" "+code)
		}
	}
	if len(execTags) != 2 || !strings.Contains(execTags[0], "EXECABORT") {
		t.Errorf("EXEC results: %q", execTags)
	}
	agenttest.CheckGapless(t, evs)
}

// TestMonitorAllowedByRole: with redis_monitor: true, MONITOR runs and its
// stream of other sessions' commands is relayed.
func TestMonitorAllowedByRole(t *testing.T) {
	s := newStack(t, stackOptions{roleOptions: "{redis_monitor: true}"})
	r := s.raw(t)
	r.send("AUTH app pw", "MONITOR")
	if got := r.lines(2); got[0] != "+OK" || got[1] != "+OK" {
		t.Fatalf("MONITOR: %q", got)
	}
	c := s.client(t, "app", 2)
	if err := c.Set(context.Background(), "watched", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	found := false
	for !found {
		l := r.lines(1)[0]
		found = strings.Contains(l, `"set" "watched" "1"`)
	}
	r.c.Close()
	c.Close()
	evs := s.WaitAudit(t, "both sessions end", agenttest.Count("db.session.end", 2))
	ok := false
	for _, e := range agenttest.OfType(evs, "db.session.result") {
		if e["db_command_tag"] == "MONITOR simple" && e["success"] == true {
			ok = true
		}
	}
	if !ok {
		t.Error("no successful MONITOR result")
	}
	agenttest.CheckGapless(t, evs)
}

// TestLockEndsTheSession: a lock closes a live session; the client reads
// why, and a new session is refused.
func TestLockEndsTheSession(t *testing.T) {
	src := &agenttest.Locks{}
	s := newStack(t, stackOptions{state: src})
	r := s.raw(t)
	r.send("AUTH app pw", "SET before 1")
	if got := r.lines(2); got[1] != "+OK" {
		t.Fatalf("before the lock: %q", got)
	}
	src.Lock("alice", "incident 42")
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	if end := agenttest.OfType(evs, "db.session.end")[0]; end["reason"] != "locked" {
		t.Fatalf("end %v", end)
	}
	if got := r.lines(1)[0]; !strings.HasPrefix(got, "-ERR tollgate: ") || !strings.Contains(got, "incident 42") {
		t.Fatalf("the client read %q", got)
	}
	err := s.client(t, "app", 2).Ping(context.Background()).Err()
	if err == nil || !strings.Contains(err.Error(), "incident 42") {
		t.Fatalf("new session under the lock: %v", err)
	}
}

// TestDeniedUser: a db user the roles do not allow gets the denial from
// go-redis's first command, and the refusal is recorded.
func TestDeniedUser(t *testing.T) {
	s := newStack(t, stackOptions{})
	err := s.client(t, "other", 3).Ping(context.Background()).Err()
	if err == nil || !strings.Contains(err.Error(), "NOPERM tollgate: access denied") || !strings.Contains(err.Error(), `db_user "other"`) {
		t.Fatalf("denied user: %v", err)
	}
	evs := s.WaitAudit(t, "the refused start", agenttest.Count("db.session.start", 1))
	if st := agenttest.OfType(evs, "db.session.start")[0]; st["success"] != false || st["db_user"] != "other" {
		t.Fatalf("start %v", st)
	}
	agenttest.NoSecret(t, evs, s.NATS.StoreDir, "client-secret-pw")
}

// TestRefusedCommands: commands that would break pairing commands with
// replies, or leave the session's user, are answered by the agent and
// never reach Redis; the session goes on.
func TestRefusedCommands(t *testing.T) {
	s := newStack(t, stackOptions{})
	before, _ := s.db.CommandStats()
	r := s.raw(t)
	r.send("AUTH app pw", "CLIENT REPLY OFF", "PSYNC ? -1", "SYNC", "RESET", "MONITOR", "HELLO 3 AUTH other pw", "PING")
	got := r.lines(8)
	want := []string{"+OK", "-ERR tollgate: CLIENT REPLY OFF is refused", "-NOPERM tollgate: PSYNC is refused", "-NOPERM tollgate: SYNC is refused",
		"-NOPERM tollgate: RESET is refused", "-NOPERM tollgate: MONITOR is refused", "-WRONGPASS tollgate: this session is signed in as db user \"app\"", "+PONG"}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Fatalf("reply %d: %q, want %q", i+1, got[i], w)
		}
	}
	after, _ := s.db.CommandStats()
	if d := statsDelta(before, after); d["client|reply"]+d["psync"]+d["sync"]+d["reset"]+d["monitor"]+d["hello"] != 0 || d["ping"] != 1 {
		t.Fatalf("Redis ran %v", d)
	}
	r.c.Close()
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	if n := len(agenttest.OfType(evs, "db.session.query")); n != 8 {
		t.Errorf("%d query events, want 8", n)
	}
	agenttest.CheckGapless(t, evs)
}

// TestLargeValue: a 4 MiB value crosses many reads both ways; Redis gets
// it whole, the event keeps its first 64 KiB and says how large it was.
func TestLargeValue(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	c := s.client(t, "app", 3)
	big := strings.Repeat("0123456789abcdef", 256<<10)
	if err := c.Set(ctx, "big", big, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, "big").Result(); err != nil || got != big {
		t.Fatalf("GET big: %d bytes, %v", len(got), err)
	}
	if n := s.db.MustDo(t, "STRLEN", "big"); n != "4194304" {
		t.Fatalf("Redis holds %s bytes", n)
	}
	c.Close()
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	found := false
	for _, q := range queries(evs) {
		if strings.HasPrefix(q, "set big 0123456789abcdef") {
			found = true
			if !strings.HasSuffix(q, "...(4194304 bytes)") || len(q) > 70<<10 {
				t.Errorf("SET big recorded as %d bytes ending %q", len(q), q[len(q)-30:])
			}
		}
	}
	if !found {
		t.Error("no event for SET big")
	}
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		if r["db_command_tag"] == "GET bulk" && r["db_bytes"].(float64) < 4194304 {
			t.Errorf("GET result %v", r)
		}
	}
}

// TestPubSubRESP2: in RESP2 subscribe mode, confirmations answer their
// commands one per channel, messages are relayed between them, and once
// every subscription is gone replies pair with commands again: each
// command has exactly one result.
func TestPubSubRESP2(t *testing.T) {
	s := newStack(t, stackOptions{})
	r := s.raw(t)
	r.send("AUTH app pw", "SUBSCRIBE a b", "PSUBSCRIBE p*")
	got := r.lines(1 + 3*6)
	if got[0] != "+OK" || got[5] != "a" || got[11] != "b" || got[18] != ":3" {
		t.Fatalf("subscribe: %q", got)
	}
	pub := s.client(t, "app", 2)
	ctx := context.Background()
	if n := pub.Publish(ctx, "a", "m1").Val(); n != 1 {
		t.Fatalf("PUBLISH a: %d receivers", n)
	}
	if n := pub.Publish(ctx, "pq", "m2").Val(); n != 1 {
		t.Fatalf("PUBLISH pq: %d receivers", n)
	}
	// message a m1, then pmessage p* pq m2.
	msgs := r.lines(7 + 9)
	if msgs[6] != "m1" || msgs[15] != "m2" {
		t.Fatalf("messages: %q", msgs)
	}
	r.send("PING", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SET after 1", "GET after")
	rest := r.lines(5 + 2*6 + 6 + 1 + 2)
	if rest[1] != "$4" || rest[2] != "pong" || rest[len(rest)-3] != "+OK" || rest[len(rest)-1] != "1" {
		t.Fatalf("after: %q", rest)
	}
	r.c.Close()
	pub.Close()
	evs := s.WaitAudit(t, "both sessions end", agenttest.Count("db.session.end", 2))
	eachAnswered(t, evs)
	agenttest.CheckGapless(t, evs)
}

// eachAnswered checks that every session has as many results as queries:
// every command was paired with one reply.
func eachAnswered(t testing.TB, evs []map[string]any) {
	t.Helper()
	bySession := map[string][2]int{}
	for _, e := range evs {
		sid := e["sid"].(string)
		c := bySession[sid]
		switch e["type"] {
		case "db.session.query":
			c[0]++
		case "db.session.result":
			c[1]++
		}
		bySession[sid] = c
	}
	for sid, c := range bySession {
		if c[0] != c[1] {
			t.Errorf("session %s: %d queries, %d results", sid, c[0], c[1])
			for _, e := range evs {
				if e["sid"] == sid {
					t.Logf("  %v %v %v %v", e["type"], e["db_query"], e["db_command_tag"], e["reason"])
				}
			}
		}
	}
}
