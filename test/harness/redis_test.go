package harness

import (
	"strings"
	"testing"
)

func TestRedis(t *testing.T) {
	r := RedisWith(t, RedisOptions{Users: []string{"app"}})
	if out := r.MustDo(t, "SET", "k", "v"); out != "OK" {
		t.Fatalf("SET: %q", out)
	}
	if out := r.MustDo(t, "GET", "k"); out != "v" {
		t.Fatalf("GET: %q", out)
	}
	users := r.MustDo(t, "ACL", "LIST")
	if !strings.Contains(users, "user app on nopass") || !strings.Contains(users, "user default off") {
		t.Fatalf("ACL LIST: %q", users)
	}
	stats, err := r.CommandStats()
	if err != nil || stats["set"] != 1 || stats["get"] != 1 {
		t.Fatalf("commandstats %v %v", stats, err)
	}
	if _, err := r.Do("NOSUCHCOMMAND"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("unknown command: %v", err)
	}
}
