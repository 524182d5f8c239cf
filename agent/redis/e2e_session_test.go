package redis_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent/internal/agenttest"
)

// rawConn is a RESP connection to the agent that reads replies as lines.
type rawConn struct {
	t  testing.TB
	c  *tls.Conn
	br *bufio.Reader
}

func (s *stack) raw(t testing.TB) *rawConn {
	c, err := tls.Dial("tcp", s.addr, s.agentTLS(t))
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
	evs := s.waitAudit(t, "session end", agenttest.Count("db.session.end", 1))
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
	evs := s.waitAudit(t, "both sessions end", agenttest.Count("db.session.end", 2))
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
