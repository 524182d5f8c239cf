package redis_test

import (
	"crypto/tls"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/redis"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/protocol"
	"github.com/tollgate-db/tollgate/test/harness"
)

// stack is a real Redis trusting Tollgate's db-client CA with ACL users,
// and the agenttest stack with an agent in front of it as rd1.
type stack struct {
	*agenttest.Stack
	db *harness.RedisServer
}

type stackOptions struct {
	mode string
	// roleOptions is the role's options block.
	roleOptions string
	// state, when set, gives the agent a Lifecycle reading it.
	state agent.StateSource
}

func newStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	if o.mode == "" {
		o.mode = "strict"
	}
	s := &stack{Stack: agenttest.New(t, agenttest.Options{})}
	s.db = harness.RedisWith(t, harness.RedisOptions{TLS: harness.TLSOptions{ClientCA: s.DBClientCA(t)}, Users: []string{"app", "other"}})

	dbConf := agenttest.Database("rd1", protocol.Redis, s.db.Addr(), s.db.ServerCAFile, o.mode)
	dbConf.TLS.ServerName = "localhost"
	s.Serve(t, agenttest.Agent{Roles: agenttest.Role([]string{"app", "default"}, []string{"0", "1"}, o.roleOptions), State: o.state, ServerConfig: agent.ServerConfig{
		Databases: []config.Database{dbConf},
		Engines:   map[string]agent.Engine{protocol.Redis: redis.New(redis.Options{Logger: agenttest.Quiet()})},
	}})
	return s
}

// agentTLS is the client side of TLS to the agent with alice's certificate.
func (s *stack) agentTLS(t testing.TB) *tls.Config { return s.TLS(t, "rd1") }

// client is go-redis through the agent, signing in as user with a
// password the agent must neither forward nor record.
func (s *stack) client(t testing.TB, user string, proto int) *goredis.Client {
	c := goredis.NewClient(&goredis.Options{
		Addr: s.Addr, TLSConfig: s.agentTLS(t), Username: user, Password: "client-secret-pw",
		Protocol: proto, DisableIdentity: true, PoolSize: 2, MaxRetries: -1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// queries are the db_query of every query event, in order.
func queries(evs []map[string]any) []string {
	var out []string
	for _, e := range agenttest.OfType(evs, "db.session.query") {
		out = append(out, e["db_query"].(string))
	}
	return out
}

// statsDelta is what the server counted between two INFO commandstats,
// without the harness's own AUTH and INFO.
func statsDelta(before, after map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	out["auth"] -= 1
	out["info"] -= 1
	for k, v := range out {
		if v <= 0 {
			delete(out, k)
		}
	}
	return out
}

// countByCommand counts query events by the command Redis counts them
// under: lower-case name, with the subcommand of a container command.
func countByCommand(qs []string) map[string]int64 {
	out := map[string]int64{}
	for _, q := range qs {
		f := strings.Fields(q)
		name := strings.ToLower(f[0])
		switch name {
		case "config", "client", "acl", "object", "command", "memory", "xinfo", "script", "function", "pubsub":
			if len(f) > 1 {
				name += "|" + strings.ToLower(f[1])
			}
		}
		out[name]++
	}
	return out
}
