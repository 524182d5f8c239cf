package postgres_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

func psql(t *testing.T, conn string, stdin string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatal("psql not found: install the Debian package postgresql-client-15")
	}
	cmd := exec.Command("psql", append([]string{conn, "-X", "-v", "ON_ERROR_STOP=1", "-At"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestPsqlThroughAgent(t *testing.T) {
	s := newStack(t, "strict")
	out, err := psql(t, s.psqlConn("app"), "",
		"-c", "insert into accounts (id, owner, balance) values (1, 'ann', 10.5), (2, 'bob', 20)",
		"-c", "select owner from accounts order by id",
		"-c", "select nope from accounts")
	if err == nil || !strings.Contains(out, "ann\nbob") || !strings.Contains(out, `column "nope" does not exist`) {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	start := agenttest.OfType(evs, "db.session.start")[0]
	if start["success"] != true || start["user"] != "alice" || start["db_user"] != "app" || start["db_service"] != "pg1" || start["rule"] != "role dev: allow" {
		t.Fatalf("start %v", start)
	}
	results := agenttest.OfType(evs, "db.session.result")
	var tags []string
	for _, r := range results {
		tags = append(tags, fmt.Sprint(r["db_command_tag"], "/", r["db_rows"], "/", r["db_error_code"]))
	}
	if got := strings.Join(tags, " "); got != "INSERT 0 2/2/<nil> SELECT 2/2/<nil> <nil>/0/42703" {
		t.Fatalf("results %s", got)
	}
	end := agenttest.OfType(evs, "db.session.end")[0]
	if end["db_statements"].(float64) != 3 || end["db_errors"].(float64) != 1 || end["db_rows"].(float64) != 4 {
		t.Fatalf("end %v", end)
	}

	// Ground truth: every statement the database logged for app has a
	// query event with the same text.
	logged := s.statementLog(t)
	queries := map[string]bool{}
	for _, q := range agenttest.OfType(evs, "db.session.query") {
		queries[q["db_query"].(string)] = true
	}
	n := 0
	for _, e := range logged {
		if e.User != "app" {
			continue
		}
		n++
		if !queries[e.Text] {
			t.Errorf("statement in the database log without an audit event: %q", e.Text)
		}
	}
	if n != 3 {
		t.Fatalf("database logged %d statements of app, want 3", n)
	}
}

func TestDeniedAccess(t *testing.T) {
	s := newStack(t, "strict")
	out, err := psql(t, s.psqlConn("postgres"), "", "-c", "select 1")
	if err == nil || !strings.Contains(out, "access denied") || !strings.Contains(out, `db_user "postgres"`) {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	evs := s.WaitAudit(t, "denied start", agenttest.Count("db.session.start", 1))
	st := agenttest.OfType(evs, "db.session.start")[0]
	if st["success"] != false || st["code"] != "TGDB000W" || !strings.Contains(st["error"].(string), "db_user") {
		t.Fatalf("start %v", st)
	}
	logged := s.statementLog(t)
	for _, e := range logged {
		if e.User == "postgres" && strings.Contains(e.Text, "select 1") {
			t.Fatal("a denied statement reached the database")
		}
	}
}

func TestPlaintextAndGSSENCRefused(t *testing.T) {
	s := newStack(t, "strict")
	host, port, _ := strings.Cut(s.Addr, ":")
	out, err := psql(t, fmt.Sprintf("host=%s port=%s user=app dbname=postgres sslmode=disable gssencmode=disable", host, port), "", "-c", "select 1")
	if err == nil || !strings.Contains(out, "connection without TLS refused") {
		t.Fatalf("plaintext: %v\n%s", err, out)
	}
	// No certificate: TLS, then a clear refusal in the protocol.
	out, err = psql(t, fmt.Sprintf("host=%s port=%s user=app dbname=postgres sslmode=require gssencmode=disable", host, port), "", "-c", "select 1")
	if err == nil || !strings.Contains(out, "no client certificate") {
		t.Fatalf("no certificate: %v\n%s", err, out)
	}
}

func TestCopyThroughAgent(t *testing.T) {
	s := newStack(t, "strict")
	var in bytes.Buffer
	for i := 100; i < 1100; i++ {
		fmt.Fprintf(&in, "%d\tsecret-owner-%d\n", i, i)
	}
	out, err := psql(t, s.psqlConn("app"), in.String(), "-c", `\copy accounts (id, owner) from stdin`)
	if err != nil {
		t.Fatalf("copy in: %v\n%s", err, out)
	}
	out, err = psql(t, s.psqlConn("app"), "", "-c", `\copy (select id, owner from accounts order by id) to stdout`)
	if err != nil || out != in.String() {
		t.Fatalf("copy out: %v (%d bytes, want %d)", err, len(out), in.Len())
	}
	evs := s.WaitAudit(t, "two sessions", agenttest.Count("db.session.end", 2))
	agenttest.CheckGapless(t, evs)
	var copied float64
	for _, c := range agenttest.OfType(evs, "db.session.postgres.copy") {
		if c["db_copy_phase"] == "done" {
			copied = c["db_copy_total_bytes"].(float64)
		}
	}
	if int(copied) != in.Len() {
		t.Fatalf("copy events count %v bytes, want %d", copied, in.Len())
	}
	rows := map[string]float64{}
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		rows[fmt.Sprint(r["db_command_tag"])] = r["db_rows"].(float64)
	}
	if rows["COPY 1000"] != 1000 {
		t.Fatalf("results %v", rows)
	}
	for _, ev := range evs {
		if strings.Contains(fmt.Sprint(ev), "secret-owner") {
			t.Fatalf("row data in an event: %v", ev)
		}
	}
}

func TestPsqlCancel(t *testing.T) {
	s := newStack(t, "strict")
	cmd := exec.Command("psql", s.psqlConn("app"), "-X", "-c", "select pg_sleep(60)")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.WaitAudit(t, "the sleep to start", agenttest.Count("db.session.query", 1))
	waitSleeping(t, s)
	// psql sends the cancel request on SIGINT, as on Ctrl-C.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if err == nil || !strings.Contains(out.String(), "canceling statement due to user request") {
		t.Fatalf("psql: %v\n%s", err, out.String())
	}
	evs := s.WaitAudit(t, "cancel event", agenttest.Count("db.session.postgres.cancel", 1))
	c := agenttest.OfType(evs, "db.session.postgres.cancel")[0]
	start := agenttest.OfType(evs, "db.session.start")[0]
	if c["sid"] != start["sid"] || c["success"] != true || c["db_backend_pid"].(float64) == 0 {
		t.Fatalf("cancel %v", c)
	}
}

// waitSleeping waits until app's pg_sleep runs in the database.
func waitSleeping(t *testing.T, s *stack) {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, s.pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := admin.QueryRow(ctx, "select count(*) from pg_stat_activity where usename = 'app' and query like 'select pg_sleep%' and state = 'active'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the sleep never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connect opens a pgx session to pg1 through the agent as alice.
func (s *stack) connect(ctx context.Context, t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(ctx, s.pgxConfig(t, "pg1"))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func (s *stack) pgxConfig(t *testing.T, sni string) *pgx.ConnConfig {
	t.Helper()
	host, port, _ := strings.Cut(s.Addr, ":")
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=app dbname=postgres sslmode=disable", host, port))
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLSConfig = s.TLS(t, sni)
	return cfg
}

func TestPgxExtendedProtocol(t *testing.T) {
	s := newStack(t, "strict")
	ctx := context.Background()
	conn := s.connect(ctx, t)
	opened := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	tag := [16]byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	bal := pgtype.Numeric{Int: big.NewInt(-123456), Exp: -2, Valid: true}
	if _, err := conn.Exec(ctx, "insert into accounts (id, owner, balance, opened, tag, blob) values ($1, $2, $3, $4, $5, $6)",
		int32(7), "zoë", bal, opened, pgtype.UUID{Bytes: tag, Valid: true}, []byte{0, 1, 2, 250}); err != nil {
		t.Fatal(err)
	}
	var owner string
	if err := conn.QueryRow(ctx, "select owner from accounts where id = $1", 7).Scan(&owner); err != nil || owner != "zoë" {
		t.Fatalf("select: %v %q", err, owner)
	}
	// Cancel through the agent over TLS, as pgx sends it.
	qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := conn.Exec(qctx, "select pg_sleep(30)")
	cancel()
	if err == nil {
		t.Fatal("sleep was not cancelled")
	}
	conn.Close(ctx)

	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	var ins map[string]any
	for _, e := range agenttest.OfType(evs, "db.session.postgres.execute") {
		if strings.HasPrefix(e["db_query"].(string), "insert into accounts") {
			ins = e
		}
	}
	if ins == nil {
		t.Fatalf("no execute event for the insert")
	}
	var params []string
	for _, p := range ins["db_query_parameters"].([]any) {
		params = append(params, p.(string))
	}
	want := []string{"7", "zoë", "-1234.56", "2024-05-06 07:08:09.123456Z", "deadbeef-0102-0304-0506-0708090a0b0c", base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 250})}
	if strings.Join(params, "|") != strings.Join(want, "|") {
		t.Fatalf("parameters %q\nwant       %q", params, want)
	}
	cancels := agenttest.OfType(evs, "db.session.postgres.cancel")
	if len(cancels) != 1 || cancels[0]["tls"] != true || cancels[0]["success"] != true {
		t.Fatalf("cancel events %v", cancels)
	}
	// Ground truth for the extended protocol: each execution the database
	// logged has an execute event with the same text.
	logged := s.statementLog(t)
	texts := map[string]bool{}
	for _, e := range agenttest.OfType(evs, "db.session.postgres.execute") {
		texts[e["db_query"].(string)] = true
	}
	for _, q := range agenttest.OfType(evs, "db.session.query") {
		texts[q["db_query"].(string)] = true
	}
	for _, e := range logged {
		if e.User == "app" && !texts[e.Text] {
			t.Errorf("logged without an event: %s %q", e.Kind, e.Text)
		}
	}
}

func TestDatabaseRefusalRelayed(t *testing.T) {
	s := newStack(t, "strict")
	conn := strings.Replace(s.psqlConn("app"), "dbname=postgres", "dbname=nosuchdb", 1)
	out, err := psql(t, conn, "", "-c", "select 1")
	if err == nil || !strings.Contains(out, `database "nosuchdb" does not exist`) || strings.Contains(out, "cannot connect") {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	if end := agenttest.OfType(evs, "db.session.end")[0]; !strings.Contains(end["reason"].(string), "nosuchdb") {
		t.Fatalf("end %v", end)
	}
}
