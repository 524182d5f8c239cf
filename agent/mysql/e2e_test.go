package mysql_test

import (
	"crypto/tls"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/mysql"
	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/test/harness"
)

// stack is a real MariaDB trusting Tollgate's db-client CA and the
// agenttest stack with an agent in front of it as my1 on two ports: raw
// TLS (Addr, what tg proxy db --tunnel dials) and the direct MySQL port
// (greeting first, then SSLRequest and TLS).
type stack struct {
	*agenttest.Stack
	db     *harness.MariaDBServer
	direct string // MySQL clients connecting themselves
}

type stackOptions struct {
	mode  string
	users []string
	// dbNames the role allows (default test).
	dbNames []string
	// maxPacket is the engine's limit on a client command (default).
	maxPacket int
	// state, when set, gives the agent a Lifecycle reading it.
	state agent.StateSource
	// dbArgs are extra mariadbd options.
	dbArgs []string
	// roleOptions is the role's options block, e.g. "{mysql_local_infile: false}".
	roleOptions string
}

func newStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	if o.mode == "" {
		o.mode = "strict"
	}
	if len(o.users) == 0 {
		o.users = []string{"app"}
	}
	if len(o.dbNames) == 0 {
		o.dbNames = []string{"test"}
	}
	s := &stack{Stack: agenttest.New(t, agenttest.Options{})}
	s.db = harness.MariaDBWith(t, harness.MariaDBOptions{TLS: harness.TLSOptions{ClientCA: s.DBClientCA(t)}, Users: o.users, Args: o.dbArgs})
	s.db.MustExec(t, "CREATE DATABASE secret; CREATE TABLE secret.codes (c INT); CREATE TABLE test.accounts (id INT PRIMARY KEY, owner VARCHAR(40), balance DECIMAL(12,2), opened DATETIME(6), score DOUBLE, big BIGINT UNSIGNED, blob_col VARBINARY(64))")
	for _, u := range o.users {
		s.db.MustExec(t, "GRANT ALL ON secret.* TO '"+u+"'@'%'")
	}

	roles, err := access.Parse([]byte(agenttest.Role([]string{"app", "sbtest", "edu"}, o.dbNames, o.roleOptions)))
	if err != nil {
		t.Fatal(err)
	}
	eng := mysql.New(mysql.Options{Logger: agenttest.Quiet(), MaxPacket: o.maxPacket})
	// One agent.Server serves the raw TLS port and the direct MySQL port.
	s.Serve(t, agenttest.Agent{State: o.state,
		ServerConfig: agent.ServerConfig{
			Databases: []config.Database{agenttest.Database("my1", "mysql", s.db.Addr(), s.db.ServerCAFile, o.mode)},
			Authorize: namesEnforced(roles),
			Engines:   map[string]agent.Engine{"mysql": eng},
		},
		Listeners: func(srv *agent.Server) []net.Listener {
			directLn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s.direct = directLn.Addr().String()
			dbInfo, _ := srv.Database("my1")
			return []net.Listener{eng.Listener(directLn, mysql.ListenerOptions{Cluster: "test", Recorder: s.Pub, Database: dbInfo})}
		},
	})
	return s
}

// namesEnforced is the role decision with db_names checked for MySQL too:
// the engine checks every database change, so the name a session uses is
// known at all times.
func namesEnforced(roles []access.Role) agent.Authorizer {
	return func(id identity.Identity, db agent.DatabaseInfo, dbUser, dbName string) agent.Decision {
		d := access.Decide(id, roles, access.Database{Name: db.Name, Labels: db.Labels}, dbUser, dbName)
		return agent.Decision{Allowed: d.Allowed, Rule: d.Rule, Refused: d.Refused, Reason: d.Reason, Options: access.Options(roles)}
	}
}

// agentTLS is the client side of TLS to the agent with alice's certificate.
func (s *stack) agentTLS(t testing.TB) *tls.Config { return s.TLS(t, "my1") }

// tunnel is what tg proxy db --tunnel does for MySQL: a local plaintext
// port whose connections are carried in TLS to the agent.
func (s *stack) tunnel(t testing.TB) string { return agenttest.Tunnel(t, s.Addr, s.agentTLS(t)) }

// settled waits for n session ends with every session's events gapless: a
// batch retried after an outage may store its later events before its
// earlier ones, so a gap can show for a moment; one that stays is a loss.
func settled(n int) func([]map[string]any) bool {
	return func(evs []map[string]any) bool {
		return agenttest.Count("db.session.end", n)(evs) && agenttest.Gapless(evs) == nil
	}
}

// rendered is every statement text the audit says was sent: queries,
// prepares, and executes with their parameters put in place of the
// placeholders, without quotes (the general log quotes strings).
func rendered(evs []map[string]any) (map[string]int, []*regexp.Regexp) {
	out := map[string]int{}
	var patterns []*regexp.Regexp
	for _, ev := range evs {
		switch ev["type"] {
		case "db.session.query", "db.session.mysql.prepare":
			out[strings.TrimSpace(ev["db_query"].(string))]++
		case "db.session.mysql.execute":
			q, _ := ev["db_query"].(string)
			params, _ := ev["db_query_parameters"].([]any)
			var b, re strings.Builder
			i, binary := 0, false
			for _, r := range q {
				if r == '?' && i < len(params) {
					v := params[i].(string)
					b.WriteString(v)
					// The log writes bytes as the server escapes them.
					if strings.HasPrefix(v, "base64:") {
						binary = true
						re.WriteString(".*")
					} else {
						re.WriteString(regexp.QuoteMeta(unquote(v)))
					}
					i++
					continue
				}
				b.WriteRune(r)
				re.WriteString(regexp.QuoteMeta(unquote(string(r))))
			}
			if binary {
				patterns = append(patterns, regexp.MustCompile("^(?s)"+strings.TrimSpace(re.String())+"$"))
			} else {
				out["EXEC "+unquote(strings.TrimSpace(b.String()))]++
			}
		}
	}
	return out, patterns
}

func matchesAny(ps []*regexp.Regexp, s string) bool {
	for _, p := range ps {
		if p.MatchString(s) {
			return true
		}
	}
	return false
}

func unquote(s string) string { return strings.ReplaceAll(s, "'", "") }

// groundTruth checks that every statement MariaDB logged for a user has an
// audit event and returns how many it checked.
func groundTruth(t testing.TB, s *stack, evs []map[string]any, user string) int {
	t.Helper()
	logged, err := s.db.GeneralLogEntries()
	if err != nil {
		t.Fatal(err)
	}
	have, patterns := rendered(evs)
	n, missing := 0, 0
	for _, e := range logged {
		if !strings.HasPrefix(e.User, user+"@") {
			continue
		}
		var key string
		switch e.Command {
		case "Query", "Prepare":
			key = strings.TrimSpace(e.Argument)
		case "Execute":
			key = "EXEC " + unquote(strings.TrimSpace(e.Argument))
		default:
			continue
		}
		n++
		if have[key] == 0 && e.Command == "Execute" && matchesAny(patterns, unquote(strings.TrimSpace(e.Argument))) {
			continue
		}
		if have[key] == 0 {
			missing++
			if missing < 10 {
				t.Errorf("%s in the database log without an audit event: %q", e.Command, e.Argument)
			}
			continue
		}
		have[key]--
	}
	if missing > 0 {
		t.Fatalf("%d of %d logged statements of %s have no audit event", missing, n, user)
	}
	return n
}
