package postgres_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

// psqlWith runs psql with PGOPTIONS set to options.
func psqlWith(t *testing.T, conn, options string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("psql", append([]string{conn, "-X", "-v", "ON_ERROR_STOP=1", "-At"}, args...)...)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10", "PGOPTIONS="+options)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestStartupParametersRefused: settings that would silence the database's
// own log are refused at startup with a native error and an event, nothing
// of those sessions reaches the server, and a normal startup's parameters
// are recorded.
func TestStartupParametersRefused(t *testing.T) {
	s := newStack(t, "strict")
	refused := []struct{ options, param string }{
		{"-c log_statement=none", "log_statement"},
		{"--log_statement=none", "log_statement"},
		{"-clog_statement=none", "log_statement"},
		{"-c search_path=public -c log_min_duration_statement=-1", "log_min_duration_statement"},
		{"-c pgaudit.log=none", "pgaudit.log"},
		{"-c session_replication_role=replica", "session_replication_role"},
	}
	for i, r := range refused {
		out, err := psqlWith(t, s.psqlConn("app"), r.options, "-c", "select 'hidden "+string(rune('a'+i))+"'")
		if err == nil || !strings.Contains(out, `parameter "`+r.param+`" may not be set`) || !strings.Contains(out, "FATAL") {
			t.Fatalf("PGOPTIONS=%q: %v\n%s", r.options, err, out)
		}
	}
	// A startup parameter of its own, with pgx.
	ctx := context.Background()
	cfg := s.pgxConfig(t, "pg1")
	cfg.RuntimeParams["log_statement"] = "none"
	if conn, err := pgx.ConnectConfig(ctx, cfg); err == nil {
		conn.Close(ctx)
		t.Fatal("log_statement as a startup parameter was accepted")
	} else if !strings.Contains(err.Error(), "42501") {
		t.Fatalf("pgx: %v", err)
	}
	// A normal startup, with an application name and a harmless option.
	out, err := psqlWith(t, s.psqlConn("app")+" application_name=tollgate-e2e", "-c statement_timeout=5s",
		"-c", "select 'visible', current_setting('statement_timeout')")
	if err != nil || strings.TrimSpace(out) != "visible|5s" {
		t.Fatalf("normal startup: %v\n%s", err, out)
	}

	evs := s.WaitAudit(t, "sessions", agenttest.Count("db.session.start", len(refused)+2))
	starts := agenttest.OfType(evs, "db.session.start")
	for i, st := range starts[:len(refused)] {
		params := strings.Join(toStrings(st["db_startup_parameters"]), " ")
		if st["success"] != false || !strings.Contains(st["error"].(string), refused[i].param) || !strings.Contains(params, "options="+refused[i].options) {
			t.Errorf("start event of %q: %v", refused[i].options, st)
		}
	}
	if st := starts[len(refused)]; st["success"] != false || !strings.Contains(st["error"].(string), "startup parameter log_statement") {
		t.Errorf("start event of pgx: %v", st)
	}
	ok := starts[len(refused)+1]
	params := strings.Join(toStrings(ok["db_startup_parameters"]), " ")
	if ok["success"] != true || !strings.Contains(params, "application_name=tollgate-e2e") || !strings.Contains(params, "options=-c statement_timeout=5s") {
		t.Errorf("normal start event: %v", ok)
	}
	logged := s.statementLog(t)
	visible := false
	for _, e := range logged {
		if strings.Contains(e.Text, "hidden") {
			t.Errorf("a refused session's statement reached the server: %q", e.Text)
		}
		visible = visible || strings.Contains(e.Text, "'visible'")
	}
	if !visible {
		t.Error("the normal session's statement is not in the server's log")
	}
}

func toStrings(v any) []string {
	a, _ := v.([]any)
	out := make([]string, len(a))
	for i, x := range a {
		out[i], _ = x.(string)
	}
	return out
}

// TestSetLoggingRefused: SET, RESET and set_config of a refused parameter
// are answered with 42501 by the agent, simple and extended, and recorded;
// the session goes on and the database never sees them.
func TestSetLoggingRefused(t *testing.T) {
	s := newStack(t, "strict")
	out, err := psql(t, s.psqlConn("app"), "select 'before';\nSET log_statement = 'none';\nselect 'after';\n", "-v", "ON_ERROR_STOP=0")
	if !strings.Contains(out, "before") || !strings.Contains(out, "after") || !strings.Contains(out, `parameter "log_statement" may not be set`) {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	ctx := context.Background()
	conn := s.connect(ctx, t)
	if _, err := conn.Exec(ctx, "select set_config('log_statement', $1, false)", "none"); err == nil || !strings.Contains(err.Error(), "42501") {
		t.Fatalf("set_config: %v", err)
	}
	if _, err := conn.Exec(ctx, "RESET pgaudit.log"); err == nil || !strings.Contains(err.Error(), "42501") {
		t.Fatalf("reset: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "select $1::int", 7).Scan(&n); err != nil || n != 7 {
		t.Fatalf("after the refusals: %v %d", err, n)
	}
	conn.Close(ctx)

	evs := s.WaitAudit(t, "sessions end", agenttest.Count("db.session.end", 2))
	agenttest.CheckGapless(t, evs)
	if refusals := resultsWithCode(evs, "42501"); refusals != 3 {
		t.Errorf("%d refusals recorded, want 3", refusals)
	}
	logged := s.statementLog(t)
	after := false
	for _, e := range logged {
		l := strings.ToLower(e.Text)
		if strings.Contains(l, "log_statement") || strings.Contains(l, "pgaudit") {
			t.Errorf("a refused statement reached the server: %q", e.Text)
		}
		after = after || strings.Contains(e.Text, "'after'")
	}
	if !after {
		t.Error("the statement after the refusal is not in the server's log")
	}
}
