package mysql_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

// driverLog collects what go-sql-driver/mysql logs (sequence warnings
// among it).
type driverLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *driverLog) Print(v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprint(v...))
}

func (l *driverLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

// loggedDriver is driver with its own logger and packet limit.
func (s *stack) loggedDriver(t *testing.T, log *driverLog, maxPacket int) *sql.DB {
	t.Helper()
	return s.driverAs(t, "app", "test", func(c *gomysql.Config) {
		c.Logger = log
		if maxPacket > 0 {
			c.MaxAllowedPacket = maxPacket
		}
	})
}

// result is what a client reads of a result set: column names, types and
// every value's bytes.
type result struct {
	names, types []string
	rows         [][][]byte
}

func readResult(t *testing.T, db *sql.DB, q string, args ...any) result {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var r result
	cts, err := rows.ColumnTypes()
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range cts {
		r.names = append(r.names, ct.Name())
		r.types = append(r.types, ct.DatabaseTypeName())
	}
	vals := make([]sql.RawBytes, len(cts))
	ptrs := make([]any, len(cts))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := make([][]byte, len(vals))
		for i, v := range vals {
			row[i] = bytes.Clone(v)
		}
		r.rows = append(r.rows, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return r
}

func sameResult(t *testing.T, what string, direct, agent result) {
	t.Helper()
	if strings.Join(direct.names, ",") != strings.Join(agent.names, ",") || strings.Join(direct.types, ",") != strings.Join(agent.types, ",") {
		t.Fatalf("%s: columns differ: %d directly, %d through the agent", what, len(direct.names), len(agent.names))
	}
	if len(direct.rows) != len(agent.rows) {
		t.Fatalf("%s: %d rows directly, %d through the agent", what, len(direct.rows), len(agent.rows))
	}
	for i := range direct.rows {
		for j := range direct.rows[i] {
			if !bytes.Equal(direct.rows[i][j], agent.rows[i][j]) {
				t.Fatalf("%s: row %d column %d differs", what, i, j)
			}
		}
	}
}

func noDriverWarnings(t *testing.T, log *driverLog) {
	t.Helper()
	if lines := log.take(); len(lines) > 0 {
		t.Fatalf("the driver logged: %q", lines)
	}
}

// Results as wide as the protocol allows come through as they come
// directly, in the text and the binary protocol.
func TestWideResults(t *testing.T) {
	s := newStack(t, stackOptions{})
	direct, err := sql.Open("mysql", s.db.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	log := &driverLog{}
	db := s.loggedDriver(t, log, 0)
	for _, n := range []int{5000, 65535} {
		var q strings.Builder
		q.WriteString("SELECT ")
		for i := 1; i <= n; i++ {
			if i > 1 {
				q.WriteString(", ")
			}
			fmt.Fprintf(&q, "%d AS c%d", i, i)
		}
		want := readResult(t, direct, q.String())
		if len(want.names) != n {
			t.Fatalf("MariaDB returned %d columns directly, want %d", len(want.names), n)
		}
		got := readResult(t, db, q.String())
		sameResult(t, fmt.Sprintf("%d columns, text", n), want, got)
		// With an argument the driver prepares and executes: the binary
		// protocol, and a COM_STMT_PREPARE_OK counting n columns.
		arg := strings.Replace(q.String(), "1 AS c1", "? AS c1", 1)
		want = readResult(t, direct, arg, 1)
		got = readResult(t, db, arg, 1)
		sameResult(t, fmt.Sprintf("%d columns, binary", n), want, got)
		t.Logf("%d columns: same through the agent as directly", n)
	}
	noDriverWarnings(t, log)
	db.Close()
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	for _, e := range agenttest.OfType(evs, "db.session.malformed_packet") {
		t.Fatalf("malformed: %v", e)
	}
	results := 0
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		if r["success"] == true && strings.HasSuffix(r["db_command_tag"].(string), "rows=1 affected=0") {
			results++
		}
	}
	if results < 4 {
		t.Fatalf("%d one-row results recorded, want 4", results)
	}
}

// Rows of 16 MiB and more arrive split over several packets, the one of
// exactly 2^24-1 bytes with an empty packet after it.
func TestLargeRows(t *testing.T) {
	s := newStack(t, stackOptions{dbArgs: []string{"--max-allowed-packet=256M"}})
	direct, err := sql.Open("mysql", s.db.AdminDSN()+"&maxAllowedPacket=0")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	log := &driverLog{}
	db := s.loggedDriver(t, log, 128<<20)
	// A text row of one value of n bytes is 4 bytes of length and n.
	for _, n := range []int{1<<24 - 1 - 4, 1<<24 - 4, 17 << 20, 40 << 20} {
		q := fmt.Sprintf("SELECT REPEAT('x', %d) AS big, 7 AS small", n)
		got := readResult(t, db, q)
		want := readResult(t, direct, q)
		sameResult(t, fmt.Sprintf("row of %d bytes, text", n), want, got)
		if len(got.rows) != 1 || len(got.rows[0][0]) != n {
			t.Fatalf("row of %d bytes: %d rows", n, len(got.rows))
		}
		// The binary protocol, with the size as a parameter.
		got = readResult(t, db, "SELECT REPEAT('y', ?) AS big, 7 AS small", n)
		if len(got.rows) != 1 || len(got.rows[0][0]) != n || string(got.rows[0][1]) != "7" {
			t.Fatalf("binary row of %d bytes", n)
		}
	}
	// A client command over 16 MiB, split as well.
	big := bytes.Repeat([]byte("z"), 20<<20)
	var length int
	if err := db.QueryRow("SELECT LENGTH(?)", big).Scan(&length); err != nil || length != len(big) {
		t.Fatalf("parameter of %d bytes: %d %v", len(big), length, err)
	}
	noDriverWarnings(t, log)
	db.Close()
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	for _, e := range agenttest.OfType(evs, "db.session.malformed_packet") {
		t.Fatalf("malformed: %v", e)
	}
	var over16 int
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		if b, _ := r["db_bytes"].(float64); b > 1<<24 {
			over16++
		}
	}
	if over16 < 7 {
		t.Fatalf("%d results of more than 16 MiB recorded, want 7", over16)
	}
}

// The agent's own ERR packets carry the sequence id the client expects:
// go-sql-driver logs a warning (and closes the connection) otherwise.
func TestAgentErrorSequence(t *testing.T) {
	s := newStack(t, stackOptions{})
	log := &driverLog{}
	db := s.loggedDriver(t, log, 0)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var pe *gomysql.MySQLError
	// A refused database change, as a statement and as COM_INIT_DB (the
	// driver's connection to a database it names).
	if _, err := conn.ExecContext(ctx, "USE secret"); !errors.As(err, &pe) || pe.Number != 1044 {
		t.Fatalf("USE secret: %v", err)
	}
	if err := conn.PingContext(ctx); err != nil {
		t.Fatalf("after the refused USE: %v", err)
	}
	noDriverWarnings(t, log)

	// Refusals while the audit store is down: a statement, a prepare,
	// and an execute of a statement prepared before.
	stmt, err := conn.PrepareContext(ctx, "SELECT ? + 1")
	if err != nil {
		t.Fatal(err)
	}
	s.NATS.Stop()
	if _, err := conn.ExecContext(ctx, "SELECT 1"); !errors.As(err, &pe) || pe.Number != 1105 {
		t.Fatalf("statement during the outage: %v", err)
	}
	if _, err := stmt.ExecContext(ctx, 1); !errors.As(err, &pe) || pe.Number != 1105 {
		t.Fatalf("execute during the outage: %v", err)
	}
	if _, err := conn.PrepareContext(ctx, "SELECT ? + 2"); !errors.As(err, &pe) || pe.Number != 1105 {
		t.Fatalf("prepare during the outage: %v", err)
	}
	noDriverWarnings(t, log)
	if err := s.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var two int
		err := stmt.QueryRowContext(ctx, 1).Scan(&two)
		if err == nil && two == 2 {
			break
		}
		if !errors.As(err, &pe) || pe.Number != 1105 || time.Now().After(deadline) {
			t.Fatalf("after the outage: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stmt.Close()
	noDriverWarnings(t, log)

	// A refusal in the handshake: a database the role does not allow.
	refused := s.driverAs(t, "app", "secret", func(c *gomysql.Config) { c.Logger = log })
	if err := refused.Ping(); !errors.As(err, &pe) || pe.Number != 1044 {
		t.Fatalf("connecting to secret: %v", err)
	}
	noDriverWarnings(t, log)
}
