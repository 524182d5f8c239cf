package postgres_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/postgres"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/test/harness"
)

// stack is a real PostgreSQL trusting Tollgate's db-client CA and the
// agenttest stack with an agent in front of it as pg1.
type stack struct {
	*agenttest.Stack
	pg *harness.PostgresServer
}

func newStack(t *testing.T, mode string) *stack {
	t.Helper()
	s := &stack{Stack: agenttest.New(t, agenttest.Options{})}
	s.pg = harness.PostgresWith(t, harness.PostgresOptions{TLS: harness.TLSOptions{ClientCA: s.DBClientCA(t)}, Users: []string{"app"}})
	s.pg.MustExec(t, "create table accounts (id int primary key, owner text, balance numeric(12,2), opened timestamptz, tag uuid, blob bytea)")
	s.pg.MustExec(t, "grant all on accounts to app")
	s.Serve(t, agenttest.Agent{Roles: agenttest.Role([]string{"app"}, []string{"*"}, ""), ServerConfig: agent.ServerConfig{
		Databases: []config.Database{agenttest.Database("pg1", "postgres", s.pg.Addr(), s.pg.ServerCAFile, mode)},
		Engines:   map[string]agent.Engine{"postgres": postgres.New(postgres.Options{Logger: agenttest.Quiet()})},
		// Refusals counted in a window are stored when it ends: short here.
		RejectWindow: 200 * time.Millisecond,
	}})
	return s
}

// psqlConn connects psql to the agent directly (SSLRequest, then TLS).
func (s *stack) psqlConn(dbUser string) string {
	host, port, _ := net.SplitHostPort(s.Addr)
	return fmt.Sprintf("host=%s port=%s user=%s dbname=postgres sslmode=verify-ca sslrootcert=%s sslcert=%s sslkey=%s gssencmode=disable",
		host, port, dbUser, s.HostCAFile, s.UserCertFile, s.UserKeyFile)
}

// resultsWithCode counts the result events that carry SQLSTATE code.
func resultsWithCode(evs []map[string]any, code string) int {
	n := 0
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		if r["db_error_code"] == code {
			n++
		}
	}
	return n
}

// statementLog is every statement the database logged so far.
func (s *stack) statementLog(t *testing.T) []harness.PostgresStatement {
	t.Helper()
	logged, err := s.pg.StatementLogEntries()
	if err != nil {
		t.Fatal(err)
	}
	return logged
}
