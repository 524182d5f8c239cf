package redis_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

// TestGoRedis runs go-redis through the agent over RESP2 and RESP3: plain
// commands, a pipeline, MULTI/EXEC, SELECT inside and outside db_names,
// pub/sub; then every command Redis counted has its event, and the
// client's password is nowhere in the trail.
func TestGoRedis(t *testing.T) {
	s := newStack(t, stackOptions{})
	before, err := s.db.CommandStats()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			c := s.client(t, "app", proto)
			key := fmt.Sprintf("k%d", proto)
			if err := c.Set(ctx, key, "v1", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if v, err := c.Get(ctx, key).Result(); err != nil || v != "v1" {
				t.Fatalf("GET %q %v", v, err)
			}
			if _, err := c.Get(ctx, "missing").Result(); err != goredis.Nil {
				t.Fatalf("GET missing: %v", err)
			}
			// A pipeline: many commands in one write, gated as one batch.
			cmds, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
				for i := range 50 {
					p.RPush(ctx, key+"list", i)
				}
				p.LRange(ctx, key+"list", 0, -1)
				p.HSet(ctx, key+"h", "a", 1, "b", 2)
				p.HGetAll(ctx, key+"h")
				return nil
			})
			if err != nil || len(cmds) != 53 {
				t.Fatalf("pipeline: %d %v", len(cmds), err)
			}
			if got := cmds[50].(*goredis.StringSliceCmd).Val(); len(got) != 50 || got[49] != "49" {
				t.Fatalf("LRANGE: %v", got)
			}
			if got := cmds[52].(*goredis.MapStringStringCmd).Val(); got["b"] != "2" {
				t.Fatalf("HGETALL: %v", got)
			}
			// MULTI/EXEC.
			_, err = c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
				p.Incr(ctx, key+"n")
				p.Incr(ctx, key+"n")
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := c.Get(ctx, key+"n").Int(); n != 2 {
				t.Fatalf("counter after EXEC: %d", n)
			}
			// SELECT within db_names works; outside, the agent refuses
			// it and the connection stays in its database.
			conn := c.Conn()
			defer conn.Close()
			if err := conn.Select(ctx, 1).Err(); err != nil {
				t.Fatalf("SELECT 1: %v", err)
			}
			if err := conn.Set(ctx, key+"in1", "x", 0).Err(); err != nil {
				t.Fatal(err)
			}
			err = conn.Select(ctx, 5).Err()
			if err == nil || !strings.Contains(err.Error(), "NOPERM tollgate: access denied") || !strings.Contains(err.Error(), `db_name "5"`) {
				t.Fatalf("SELECT 5: %v", err)
			}
			if v, err := conn.Get(ctx, key+"in1").Result(); err != nil || v != "x" {
				t.Fatalf("still in db 1: %q %v", v, err)
			}
			// Pub/sub: a subscriber gets what a publisher sends through
			// another session.
			sub := c.Subscribe(ctx, "news"+key)
			defer sub.Close()
			if _, err := sub.Receive(ctx); err != nil {
				t.Fatalf("subscribe: %v", err)
			}
			if n, err := s.client(t, "app", proto).Publish(ctx, "news"+key, "hello").Result(); err != nil || n != 1 {
				t.Fatalf("PUBLISH: %d %v", n, err)
			}
			mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			msg, err := sub.ReceiveMessage(mctx)
			if err != nil || msg.Payload != "hello" {
				t.Fatalf("message: %v %v", msg, err)
			}
			// A ping on the subscribed connection is answered in order;
			// go-redis only writes PING and UNSUBSCRIBE, their replies
			// come through Receive.
			if err := sub.Ping(ctx); err != nil {
				t.Fatalf("ping in subscribe mode: %v", err)
			}
			if m, err := sub.Receive(mctx); err != nil {
				t.Fatalf("pong: %v", err)
			} else if _, ok := m.(*goredis.Pong); !ok {
				t.Fatalf("pong: got %T %v", m, m)
			}
			if err := sub.Unsubscribe(ctx, "news"+key); err != nil {
				t.Fatal(err)
			}
			if m, err := sub.Receive(mctx); err != nil {
				t.Fatalf("unsubscribe: %v", err)
			} else if u, ok := m.(*goredis.Subscription); !ok || u.Kind != "unsubscribe" || u.Count != 0 {
				t.Fatalf("unsubscribe: got %T %v", m, m)
			}
		})
	}
	// Every connection is closed: each session ends.
	time.Sleep(100 * time.Millisecond)
	// Every session ended: its events are all stored.
	evs := s.WaitAudit(t, "the end of every session", func(evs []map[string]any) bool {
		return len(agenttest.OfType(evs, "db.session.end")) == len(agenttest.OfType(evs, "db.session.start"))
	})
	after, _ := s.db.CommandStats()
	delta := statsDelta(before, after)
	got := countByCommand(queries(evs))
	for k, v := range delta {
		if got[k] < v && k != "auth" {
			t.Errorf("Redis ran %s %d times, %d query events", k, v, got[k])
		}
	}
	// Redis's AUTHs are the agent's own sign-ins, one per session: no
	// client AUTH reached it.
	if n := int64(len(agenttest.OfType(evs, "db.session.start"))); delta["auth"] != n {
		t.Errorf("Redis counted %d AUTH for %d sessions", delta["auth"], n)
	}
	// The agent refused SELECT 5 itself: Redis never saw it.
	if got["select"] != delta["select"]+2 {
		t.Errorf("SELECT: %d events, Redis counted %d, the agent refused 2", got["select"], delta["select"])
	}
	if t.Failed() {
		t.Logf("Redis: %v", delta)
		t.Logf("events: %v", got)
		t.Logf("keys: %v", slices.Sorted(maps.Keys(got)))
	}
	for _, q := range queries(evs) {
		if strings.HasPrefix(q, "HELLO") && strings.Contains(q, "AUTH") && !strings.Contains(q, "<redacted>") {
			t.Errorf("HELLO recorded with its password: %q", q)
		}
	}
	agenttest.NoSecret(t, evs, s.NATS.StoreDir, "client-secret-pw")
	agenttest.CheckGapless(t, evs)
	eachAnswered(t, evs)
	results := agenttest.OfType(evs, "db.session.result")
	if len(results) == 0 {
		t.Fatal("no result events")
	}
	var sawLRange, sawDenied bool
	for _, r := range results {
		tag, _ := r["db_command_tag"].(string)
		if strings.HasPrefix(tag, "LRANGE array 50") && r["db_rows"].(float64) == 50 {
			sawLRange = true
		}
		if strings.HasPrefix(tag, "SELECT") && r["success"] == false && r["db_error_code"] == "NOPERM" {
			sawDenied = true
		}
	}
	if !sawLRange || !sawDenied {
		t.Errorf("results: LRANGE summarised %v, SELECT 5 refused %v", sawLRange, sawDenied)
	}
	// The session's db_name follows SELECT.
	in1 := 0
	for _, q := range agenttest.OfType(evs, "db.session.query") {
		if text := q["db_query"].(string); strings.HasPrefix(text, "set k2in1") || strings.HasPrefix(text, "set k3in1") {
			in1++
			if q["db_name"] != "1" {
				t.Errorf("%s recorded on db_name %v", text, q["db_name"])
			}
		}
	}
	if in1 != 2 {
		t.Errorf("%d SETs in db 1 recorded, want 2", in1)
	}
}
