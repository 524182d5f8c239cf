package sqlserver_test

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mssql "github.com/microsoft/go-mssqldb"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

func mssqlDSN(addr, user, db, encrypt string) string {
	q := url.Values{"database": {db}, "encrypt": {encrypt}, "TrustServerCertificate": {"true"}, "app name": {"tollgate-e2e"}, "dial timeout": {"10"}}
	u := url.URL{Scheme: "sqlserver", Host: addr, User: url.UserPassword(user, "not-used"), RawQuery: q.Encode()}
	return u.String()
}

// TestGoMSSQLDB runs go-mssqldb through the tunnel and the agent, which
// logs in to the TDS server with a PKINIT ticket from the real KDC: a
// batch, parameterised RPCs, a transaction, a cancel and an error, with
// the client's own TLS inside TDS and without it.
func TestGoMSSQLDB(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	for _, enc := range []string{"disable", "true"} {
		t.Run("encrypt="+enc, func(t *testing.T) {
			db, err := sql.Open("sqlserver", mssqlDSN(s.tunnel, "alice", "app", enc))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			db.SetMaxOpenConns(1)
			var n int64
			if err := db.QueryRowContext(ctx, "select 1").Scan(&n); err != nil || n != 1 {
				t.Fatalf("select 1: %v %d\nviolations %q", err, n, s.tds.Violations())
			}
			var str string
			if err := db.QueryRowContext(ctx, "select @p1", "tollgate ✓").Scan(&str); err != nil || str != "tollgate ✓" {
				t.Fatalf("select @p1: %v %q", err, str)
			}
			if err := db.QueryRowContext(ctx, "select @n", sql.Named("n", int64(-42))).Scan(&n); err != nil || n != -42 {
				t.Fatalf("select @n: %v %d", err, n)
			}
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := tx.QueryRowContext(ctx, "select suser_sname()").Scan(&str); err != nil || str != "alice@"+realm {
				t.Fatalf("suser_sname() in a transaction: %v %q", err, str)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			start := time.Now()
			_, err = db.ExecContext(cctx, "waitfor delay '00:00:20'")
			cancel()
			if err == nil || time.Since(start) > 10*time.Second {
				t.Fatalf("cancelled WAITFOR: %v after %s", err, time.Since(start))
			}
			if err := db.QueryRowContext(ctx, "select 2").Scan(&n); err != nil || n != 2 {
				t.Fatalf("select 2 after the cancel: %v %d", err, n)
			}
			_, err = db.ExecContext(ctx, "select 1 from nowhere")
			var me mssql.Error
			if !errors.As(err, &me) || me.Number != 208 {
				t.Fatalf("select from a missing table: %v", err)
			}
		})
	}
	// go-mssqldb may open a new connection after a cancel: every
	// connection is a login at the server and a session here.
	nLogins := len(s.tds.Logins())
	if nLogins < 2 {
		t.Fatalf("%d logins at the TDS server", nLogins)
	}
	evs := s.WaitAudit(t, "every session ended", agenttest.Count("db.session.end", nLogins))
	agenttest.CheckGapless(t, evs)

	// The TDS server saw Kerberos logins of the mapped user only, and the
	// statements exactly once each.
	for _, l := range s.tds.Logins() {
		if l.Method != "kerberos" || l.Principal != "alice@"+realm || l.Database != "app" || l.AppName != "tollgate-e2e" {
			t.Fatalf("login %+v", l)
		}
	}
	if v := s.tds.Violations(); len(v) != 0 {
		t.Fatalf("the TDS server saw violations: %q", v)
	}
	logins := agenttest.OfType(evs, "db.session.sqlserver.login")
	if len(logins) != nLogins {
		t.Fatalf("%d login events for %d logins", len(logins), nLogins)
	}
	encs := []string{}
	for _, l := range logins {
		if l["db_auth_method"] != "kerberos-pkinit" || l["db_kerberos_principal"] != "alice@"+realm || l["db_spn"] != spn ||
			l["db_tds_version"] != "7.4" || l["client_program"] != "tollgate-e2e" || l["db_user"] != "alice" || l["user"] != "alice@example.com" {
			t.Fatalf("login event %v", l)
		}
		encs = append(encs, l["client_encryption"].(string))
	}
	if !slices.Contains(encs, "tls") || !slices.Contains(encs, "tls-in-tds") {
		t.Fatalf("client encryption %v", encs)
	}
	queries := agenttest.OfType(evs, "db.session.query")
	var texts []string
	for _, q := range queries {
		texts = append(texts, q["db_query"].(string))
	}
	for _, want := range []string{"select 1", "waitfor delay '00:00:20'", "select 2", "select 1 from nowhere"} {
		if n := countOf(texts, want); n != 2 {
			t.Fatalf("%d query events %q, want 2: %q", n, want, texts)
		}
	}
	if n := countOf(s.tds.Batches(), "select 1"); n != 2 {
		t.Fatalf("the server ran select 1 %d times", n)
	}
	var sawParam bool
	for _, r := range agenttest.OfType(evs, "db.session.sqlserver.rpc_request") {
		if r["db_procedure"] != "sp_executesql" || r["db_procedure_id"] != float64(10) {
			t.Fatalf("rpc event %v", r)
		}
		if r["db_query"] == "select @p1" {
			sawParam = true
			if p := r["db_query_parameters"].([]any); len(p) != 1 || p[0] != "tollgate ✓" {
				t.Fatalf("parameters %v", r)
			}
			if r["db_parameter_definitions"] != "@p1 nvarchar(10)" || r["db_parameter_types"].([]any)[0] != "nvarchar(10)" {
				t.Fatalf("definitions %v", r)
			}
		}
	}
	if !sawParam {
		t.Fatal("no rpc_request event for select @p1")
	}
	if n := len(agenttest.OfType(evs, "db.session.sqlserver.attention")); n != 2 {
		t.Fatalf("%d attention events, want 2", n)
	}
	if got := s.tds.Attentions(); got != 2 {
		t.Fatalf("the server got %d attentions, want 2", got)
	}
	var tms []string
	for _, tm := range agenttest.OfType(evs, "db.session.sqlserver.transaction") {
		tms = append(tms, tm["db_tm_request"].(string))
	}
	slices.Sort(tms)
	if !slices.Equal(tms, []string{"TM_BEGIN_XACT", "TM_BEGIN_XACT", "TM_COMMIT_XACT", "TM_COMMIT_XACT"}) {
		t.Fatalf("transaction events %v", tms)
	}
	var cancelled, notFound, selects int
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		switch {
		case r["error"] == "cancelled by the client (Attention)":
			cancelled++
		case r["db_error_code"] == "208":
			notFound++
			if r["code"] != "TGDB003W" || !strings.Contains(r["db_error_message"].(string), "nowhere") {
				t.Fatalf("error result %v", r)
			}
		case r["db_command_tag"] == "SELECT 1":
			selects++
			if r["db_rows"] != float64(1) || r["success"] != true {
				t.Fatalf("select result %v", r)
			}
		}
	}
	if cancelled != 2 || notFound != 2 || selects < 8 {
		t.Fatalf("results: %d cancelled, %d not found, %d selects", cancelled, notFound, selects)
	}
}

func countOf(xs []string, s string) int {
	n := 0
	for _, x := range xs {
		if strings.TrimSpace(x) == s {
			n++
		}
	}
	return n
}

// TestTsql runs FreeTDS's tsql through the tunnel, without and with TLS
// inside TDS: batches with several result sets, an error and a change of
// database. (tsql has no cancel: Ctrl-C ends it, and a query timeout makes
// it drop the connection, which is tested here too.)
func TestTsql(t *testing.T) {
	if _, err := exec.LookPath("tsql"); err != nil {
		t.Fatal("tsql is not installed: apt-get install freetds-bin")
	}
	s := newStack(t, stackOptions{})
	host, port, _ := net.SplitHostPort(s.tunnel)
	for _, enc := range []string{"off", "require"} {
		conf := filepath.Join(t.TempDir(), "freetds.conf")
		if err := os.WriteFile(conf, []byte("[global]\n\ttds version = 7.4\n\tencryption = "+enc+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("tsql", "-H", host, "-p", port, "-U", "alice", "-P", "not-used", "-D", "app")
		cmd.Env = append(os.Environ(), "FREETDSCONF="+conf)
		cmd.Stdin = strings.NewReader("select 41 as answer; select N'it''s' as s\ngo\nraiserror('boom', 16, 1)\ngo\nuse master\ngo\nselect db_name()\ngo\nexit\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tsql (encryption %s): %v\n%s\nviolations %q", enc, err, out, s.tds.Violations())
		}
		for _, want := range []string{"41", "it's", "boom", "master"} {
			if !strings.Contains(string(out), want) {
				t.Fatalf("tsql (encryption %s) output lacks %q:\n%s", enc, want, out)
			}
		}
	}
	evs := s.WaitAudit(t, "two tsql sessions ended", agenttest.Count("db.session.end", 2))
	agenttest.CheckGapless(t, evs)
	var qs []string
	for _, q := range agenttest.OfType(evs, "db.session.query") {
		qs = append(qs, q["db_query"].(string))
	}
	if n := countOf(qs, "select 41 as answer; select N'it''s' as s"); n != 2 {
		t.Fatalf("queries %q", qs)
	}
	changes := agenttest.OfType(evs, "db.session.sqlserver.database_change")
	if len(changes) != 2 || changes[0]["db_name_from"] != "app" || changes[0]["db_name_to"] != "master" {
		t.Fatalf("database changes %v", changes)
	}
	// Events after USE carry the new database.
	for _, r := range agenttest.OfType(evs, "db.session.query") {
		if strings.TrimSpace(r["db_query"].(string)) == "select db_name()" && r["db_name"] != "master" {
			t.Fatalf("query after USE has db_name %v", r["db_name"])
		}
	}
	var boom int
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		if r["db_error_code"] == "50000" && r["db_error_message"] == "boom" {
			boom++
		}
	}
	if boom != 2 {
		t.Fatalf("%d results with the raiserror: %v", boom, agenttest.OfType(evs, "db.session.result"))
	}
	for _, l := range s.tds.Logins() {
		if l.Method != "kerberos" || l.Principal != "alice@"+realm {
			t.Fatalf("login %+v", l)
		}
	}

	// A query timeout makes tsql drop the connection mid-request: the
	// session ends with the client gone.
	conf := filepath.Join(t.TempDir(), "freetds.conf")
	os.WriteFile(conf, []byte("[global]\n\ttds version = 7.4\n\ttimeout = 1\n"), 0o600)
	cmd := exec.Command("tsql", "-H", host, "-p", port, "-U", "alice", "-P", "not-used", "-D", "app")
	cmd.Env = append(os.Environ(), "FREETDSCONF="+conf)
	cmd.Stdin = strings.NewReader("waitfor delay '00:00:03'\ngo\nexit\n")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "timed out") {
		t.Fatalf("tsql with a timeout: %s", out)
	}
	s.WaitAudit(t, "the timed-out session ended", agenttest.Count("db.session.end", 3))
}
