package sqlserver_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

// TestPasswordsRedacted sends logins' passwords with go-mssqldb as a batch,
// as sp_executesql parameters and to a password procedure: the TDS server
// receives each unchanged, and no event or store file holds one.
func TestPasswordsRedacted(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	const (
		batch  = "S3cretPW!"
		named  = "N3wSecret"
		old    = "0ldSecret"
		pos    = "P0sSecret"
		proc   = "Pr0cSecret"
		secret = "Cr3dSecret"
	)
	db, err := sql.Open("sqlserver", mssqlDSN(s.tunnel, "alice", "app", "disable"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	stmts := []struct {
		q    string
		args []any
	}{
		{"CREATE LOGIN bob WITH PASSWORD = N'" + batch + "', CHECK_POLICY = OFF", nil},
		{"CREATE CREDENTIAL c WITH IDENTITY = 'id', SECRET = '" + secret + "'", nil},
		{"ALTER LOGIN bob WITH PASSWORD = @pw OLD_PASSWORD = @old", []any{sql.Named("pw", named), sql.Named("old", old)}},
		{"ALTER LOGIN bob WITH PASSWORD = @p1", []any{pos}},
		{"sp_addlogin", []any{sql.Named("loginame", "carol"), sql.Named("passwd", proc)}},
	}
	for _, st := range stmts {
		// The test server knows none of these statements: it answers
		// with an error, after it received them.
		_, _ = db.ExecContext(ctx, st.q, st.args...)
	}
	db.Close()

	// The server got every secret unchanged.
	got := strings.Join(s.tds.Batches(), "\n")
	for _, c := range s.tds.RPCs() {
		for _, p := range c.Params {
			got += "\n" + p.Value.Text
		}
	}
	for _, sec := range []string{batch, named, old, pos, proc, secret} {
		if !strings.Contains(got, sec) {
			t.Errorf("the server never received %q", sec)
		}
	}

	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	var red []string
	for _, ev := range evs {
		if ev["db_query_redacted"] == true {
			red = append(red, ev["type"].(string))
		}
	}
	if got := strings.Join(red, " "); got != "db.session.query db.session.query db.session.sqlserver.rpc_request db.session.sqlserver.rpc_request db.session.sqlserver.rpc_request" {
		t.Errorf("events that say redacted: %s", got)
	}
	procs := 0
	for _, ev := range agenttest.OfType(evs, "db.session.sqlserver.rpc_request") {
		if ev["db_procedure"] == "sp_addlogin" {
			procs++
			if ps, _ := ev["db_query_parameters"].([]any); len(ps) != 2 || ps[0] != "carol" || ps[1] != "***" {
				t.Errorf("sp_addlogin parameters %v", ps)
			}
		}
	}
	if procs != 1 {
		t.Errorf("%d sp_addlogin calls recorded", procs)
	}
	agenttest.NoSecret(t, evs, s.NATS.StoreDir, batch, named, old, pos, proc, secret)
}
