package redis_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

// redisCLI runs redis-cli straight to the agent with alice's certificate.
func (s *stack) redisCLI(t testing.TB, stdin string, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli not found: install the Debian package redis-tools (%v)", err)
	}
	host, port, _ := net.SplitHostPort(s.Addr)
	base := []string{"--tls", "--cert", s.UserCertFile, "--key", s.UserKeyFile, "--cacert", s.HostCAFile, "--sni", "rd1",
		"-h", host, "-p", port, "--no-auth-warning"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestRedisCLI(t *testing.T) {
	s := newStack(t, stackOptions{})
	before, err := s.db.CommandStats()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.redisCLI(t, "", "--user", "app", "--pass", "cli-secret-pw", "SET", "greeting", "hello world")
	if err != nil || strings.TrimSpace(out) != "OK" {
		t.Fatalf("SET: %q %v", out, err)
	}
	// Commands on stdin: redis-cli sends them one by one on one
	// connection; without --user the session is Redis's default user,
	// which the role allows but Redis has turned off.
	out, err = s.redisCLI(t, "GET greeting\nSELECT 1\nSET one 1\nSELECT 7\nGET one\nMONITOR\nRESET\nAUTH other pw\nAUTH app pw\nDBSIZE\n", "--user", "app", "--pass", "cli-secret-pw")
	if err != nil {
		t.Fatalf("redis-cli: %q %v", out, err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		// redis-cli puts a blank line after an error.
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	want := []string{"hello world", "OK", "OK", "NOPERM tollgate: access denied", "1", "NOPERM tollgate: MONITOR is refused", "NOPERM tollgate: RESET is refused",
		"WRONGPASS tollgate: this session is signed in as db user \"app\"", "OK", "1"}
	if len(lines) != len(want) {
		t.Fatalf("redis-cli output:\n%s", out)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d: %q, want %q", i+1, lines[i], w)
		}
	}
	out, _ = s.redisCLI(t, "", "PING")
	if !strings.Contains(out, "refused the sign-in as ACL user \"default\"") {
		t.Errorf("default user, which Redis has off: %q", out)
	}
	evs := s.WaitAudit(t, "three sessions", agenttest.Count("db.session.end", 3))
	after, err := s.db.CommandStats()
	if err != nil {
		t.Fatal(err)
	}
	delta := statsDelta(before, after)
	got := countByCommand(queries(evs))
	for k, v := range delta {
		if got[k] < v && k != "auth" {
			t.Errorf("Redis ran %s %d times, %d query events", k, v, got[k])
		}
	}
	for _, never := range []string{"monitor", "reset"} {
		if delta[never] != 0 {
			t.Errorf("%s reached Redis", never)
		}
	}
	qs := strings.Join(queries(evs), "\n")
	for _, w := range []string{`SET greeting "hello world"`, "SELECT 7", "MONITOR", "AUTH other <redacted>", "AUTH app <redacted>"} {
		if !strings.Contains(qs, w) {
			t.Errorf("no query event %q in\n%s", w, qs)
		}
	}
	agenttest.NoSecret(t, evs, s.NATS.StoreDir, "cli-secret-pw")
	agenttest.CheckGapless(t, evs)
}

// TestMalformed sends a valid command and a malformed one in one write:
// the valid one runs, the bad one is recorded, answered with a protocol
// error and the connection closed, and nothing of it reaches Redis.
func TestMalformed(t *testing.T) {
	s := newStack(t, stackOptions{})
	for _, tc := range []struct{ name, bad, reason string }{
		{"not a bulk string", "*2\r\n$3\r\nDEL\r\n:12\r\n", "expected '$', got ':'"},
		{"bad length", "*1\r\n$abc\r\nx\r\n", "invalid bulk length"},
		{"no CRLF after the value", "*2\r\n$3\r\nDEL\r\n$4\r\ngood!!\r\n", "not followed by CRLF"},
		{"unbalanced quotes", "DEL \"good\n", "unbalanced quotes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := s.db.CommandStats()
			conn, err := tls.Dial("tcp", s.Addr, s.agentTLS(t))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := conn.Write([]byte("*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$2\r\npw\r\n*3\r\n$3\r\nSET\r\n$4\r\ngood\r\n$1\r\n1\r\n" + tc.bad)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			var got []string
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					if !errors.Is(err, io.EOF) {
						t.Fatalf("after %q: %v", got, err)
					}
					break
				}
				got = append(got, strings.TrimSpace(line))
			}
			if len(got) != 3 || got[0] != "+OK" || got[1] != "+OK" || !strings.HasPrefix(got[2], "-ERR Protocol error: ") ||
				!strings.Contains(got[2], tc.reason) || !strings.Contains(got[2], "forwarded nothing of it") {
				t.Fatalf("replies %q", got)
			}
			after, _ := s.db.CommandStats()
			delta := statsDelta(before, after)
			if delta["set"] != 1 || delta["del"] != 0 {
				t.Errorf("Redis ran %v", delta)
			}
		})
	}
	evs := s.WaitAudit(t, "the malformed commands", agenttest.Count("db.session.malformed_packet", 4))
	for _, m := range agenttest.OfType(evs, "db.session.malformed_packet") {
		if m["direction"] != "client" || !strings.Contains(m["reason"].(string), "Protocol error") {
			t.Errorf("malformed event %v", m)
		}
	}
	agenttest.CheckGapless(t, evs)
	if n, _ := s.client(t, "app", 2).Exists(context.Background(), "good").Result(); n != 1 {
		t.Errorf("the valid command before the bad one did not run")
	}
}

// TestOutage: with the store down, commands are refused with a RESP error
// and reach nothing; once it is back, the session goes on.
func TestOutage(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	c := s.client(t, "app", 3)
	if err := c.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.NATS.Stop()
	before, _ := s.db.CommandStats()
	err := c.Set(ctx, "during", "1", 0).Err()
	if err == nil || !strings.Contains(err.Error(), "ERR tollgate: audit store unavailable") || !strings.Contains(err.Error(), "not sent to the database") {
		t.Fatalf("during the outage: %v", err)
	}
	_, err = c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.Set(ctx, "during2", "1", 0)
		p.Incr(ctx, "during3")
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "audit store unavailable") {
		t.Fatalf("pipeline during the outage: %v", err)
	}
	after, _ := s.db.CommandStats()
	if d := statsDelta(before, after); d["set"] != 0 || d["incr"] != 0 {
		t.Fatalf("refused commands reached Redis: %v", d)
	}
	if err := s.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = c.Set(ctx, "after", "1", 0).Err()
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "audit store unavailable") || time.Now().After(deadline) {
			t.Fatalf("after the outage: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := c.Exists(ctx, "before", "during", "during2", "during3", "after").Val(); n != 2 {
		t.Fatalf("%d keys exist, want before and after", n)
	}
	c.Close()
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	refused := 0
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		if m, _ := r["db_error_message"].(string); strings.Contains(m, "audit store unavailable") {
			refused++
		}
	}
	if refused == 0 {
		t.Error("no refusal recorded")
	}
	// go-redis writes command names in lower case.
	if qs := strings.Join(queries(evs), "\n"); !strings.Contains(qs, "set during 1") || !strings.Contains(qs, "incr during3") {
		t.Errorf("the refused commands' events are missing:\n%s", qs)
	}
}

// tunnel is what tg proxy db --tunnel does: a local plaintext port whose
// connections are carried in TLS to the agent.
func (s *stack) tunnel(t testing.TB) string { return agenttest.Tunnel(t, s.Addr, s.agentTLS(t)) }

// TestRedisBenchmark runs redis-benchmark through a tunnel, one command
// at a time and pipelined: every SET and GET Redis counted has its event.
func TestRedisBenchmark(t *testing.T) {
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		t.Fatalf("redis-benchmark not found: install the Debian package redis-tools (%v)", err)
	}
	s := newStack(t, stackOptions{})
	host, port, _ := net.SplitHostPort(s.tunnel(t))
	before, err := s.db.CommandStats()
	if err != nil {
		t.Fatal(err)
	}
	for _, pipeline := range []string{"1", "16"} {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		out, err := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "--user", "app", "-a", "bench-secret-pw",
			"-t", "set,get", "-n", "2000", "-c", "4", "-P", pipeline, "-q").CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), "SET:") || !strings.Contains(string(out), "GET:") {
			t.Fatalf("redis-benchmark -P %s: %v\n%s", pipeline, err, out)
		}
		for _, l := range strings.FieldsFunc(string(out), func(r rune) bool { return r == '\r' || r == '\n' }) {
			if strings.Contains(l, "requests per second") {
				t.Logf("redis-benchmark -P %s through the agent (strict): %s", pipeline, strings.TrimSpace(l))
			}
		}
	}
	after, err := s.db.CommandStats()
	if err != nil {
		t.Fatal(err)
	}
	delta := statsDelta(before, after)
	if delta["set"] < 4000 || delta["get"] < 4000 {
		t.Fatalf("Redis counted %v", delta)
	}
	evs := s.WaitAudit(t, "every SET and GET", func(evs []map[string]any) bool {
		got := countByCommand(queries(evs))
		return got["set"] >= delta["set"] && got["get"] >= delta["get"] &&
			len(agenttest.OfType(evs, "db.session.end")) == len(agenttest.OfType(evs, "db.session.start"))
	})
	got := countByCommand(queries(evs))
	for k, v := range delta {
		if k != "auth" && got[k] != v {
			t.Errorf("%s: Redis counted %d, %d query events", k, v, got[k])
		}
	}
	agenttest.NoSecret(t, evs, s.NATS.StoreDir, "bench-secret-pw")
	agenttest.CheckGapless(t, evs)
}
