package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/mysql/wire"
)

// driver opens go-sql-driver/mysql through the agent's direct port with
// TLS and alice's certificate; server-side prepared statements
// (interpolateParams=false, the default).
func (s *stack) driver(t *testing.T, dbName string) *sql.DB {
	t.Helper()
	return s.driverAs(t, "app", dbName, func(c *gomysql.Config) {
		c.InterpolateParams = false
		c.ParseTime = true
	})
}

// driverAs opens go-sql-driver/mysql through the agent's direct port
// with TLS and alice's certificate as dbUser, with the settings edit
// makes (when not nil); the pool closes when the test ends.
func (s *stack) driverAs(t *testing.T, dbUser, dbName string, edit func(*gomysql.Config)) *sql.DB {
	t.Helper()
	c := gomysql.NewConfig()
	c.User, c.Net, c.Addr, c.DBName = dbUser, "tcp", s.direct, dbName
	c.TLS = s.agentTLS(t)
	c.TLS.ServerName = "127.0.0.1"
	c.Timeout = 10 * time.Second
	if edit != nil {
		edit(c)
	}
	connector, err := gomysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	t.Cleanup(func() { db.Close() })
	return db
}

func TestGoDriverTextAndPrepared(t *testing.T) {
	s := newStack(t, stackOptions{dbNames: []string{"test", "other"}})
	s.db.MustExec(t, "CREATE DATABASE other; GRANT ALL ON other.* TO 'app'@'%'")
	db := s.driver(t, "test")
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Text protocol: no arguments.
	if _, err := conn.ExecContext(ctx, "INSERT INTO accounts (id, owner) VALUES (1, 'text')"); err != nil {
		t.Fatal(err)
	}
	// Binary protocol: parameters of several types.
	opened := time.Date(2024, 2, 29, 13, 14, 15, 123456000, time.UTC)
	if _, err := conn.ExecContext(ctx, "INSERT INTO accounts (id, owner, balance, opened, score, big, blob_col) VALUES (?, ?, ?, ?, ?, ?, ?)",
		2, "zoë", "12.50", opened, 2.5, uint64(18446744073709551615), []byte{0xff, 0x00, 0x01}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "INSERT INTO accounts (id, owner) VALUES (?, ?)", 3, nil); err != nil {
		t.Fatal(err)
	}
	var owner string
	var big uint64
	if err := conn.QueryRowContext(ctx, "SELECT owner, big FROM accounts WHERE id = ?", 2).Scan(&owner, &big); err != nil || owner != "zoë" || big != 18446744073709551615 {
		t.Fatalf("select: %q %d %v", owner, big, err)
	}
	_, err = conn.ExecContext(ctx, "INSERT INTO nowhere VALUES (?)", 1)
	if pe := (*gomysql.MySQLError)(nil); !errors.As(err, &pe) || pe.Number != 1146 {
		t.Fatalf("missing table: %v", err)
	}
	// A USE sent as a statement (COM_QUERY) to a database the role does
	// not allow is refused, however it is written.
	for _, q := range []string{"USE secret", "use `secret`", "/* hi */ USE secret", "SELECT 1; USE secret", "/*!40101 USE secret */"} {
		_, err := conn.ExecContext(ctx, q)
		var pe *gomysql.MySQLError
		if !errors.As(err, &pe) || pe.Number != 1044 || pe.SQLState != [5]byte{'4', '2', '0', '0', '0'} {
			t.Fatalf("%q: %v", q, err)
		}
	}
	// An allowed USE goes through and the session follows it.
	if _, err := conn.ExecContext(ctx, "USE `other`"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "SELECT 'in other'"); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	db.Close()

	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	var exec map[string]any
	for _, e := range agenttest.OfType(evs, "db.session.mysql.execute") {
		if strings.Contains(e["db_query"].(string), "blob_col") {
			exec = e
		}
	}
	if exec == nil {
		t.Fatal("no execute event for the insert with parameters")
	}
	params := strings.Join(toStrings(exec["db_query_parameters"]), "|")
	types := strings.Join(toStrings(exec["db_parameter_types"]), "|")
	if params != "2|zoë|12.50|2024-02-29 13:14:15.123456|2.5|18446744073709551615|base64:/wAB" {
		t.Fatalf("parameters %s", params)
	}
	if types != "LONGLONG|STRING|STRING|STRING|DOUBLE|LONGLONG UNSIGNED|STRING" {
		t.Fatalf("types %s", types)
	}
	var nullSeen bool
	for _, e := range agenttest.OfType(evs, "db.session.mysql.execute") {
		if p := toStrings(e["db_query_parameters"]); len(p) == 2 && p[1] == "NULL" {
			nullSeen = true
		}
	}
	if !nullSeen {
		t.Fatal("NULL parameter not recorded")
	}
	denied := 0
	for _, e := range agenttest.OfType(evs, "db.session.mysql.change_db") {
		if e["success"] == false && e["db_schema"] == "secret" {
			denied++
		}
	}
	if denied != 5 {
		t.Fatalf("%d denied USE events, want 5", denied)
	}
	followed := false
	for _, e := range agenttest.OfType(evs, "db.session.query") {
		if e["db_query"] == "SELECT 'in other'" {
			if e["db_name"] != "other" {
				t.Fatalf("the session did not follow USE: %v", e)
			}
			followed = true
		}
	}
	if !followed {
		t.Fatal("no event for the statement after USE")
	}
	results := agenttest.OfType(evs, "db.session.result")
	var failed []string
	for _, r := range results {
		if r["success"] == false {
			failed = append(failed, r["db_error_code"].(string))
		}
	}
	if strings.Join(failed, ",") != "1146" {
		t.Fatalf("failed results %v", failed)
	}
	groundTruth(t, s, evs, "app")
	logged, _ := s.db.GeneralLogEntries()
	for _, e := range logged {
		if strings.HasPrefix(e.User, "app@") && strings.Contains(e.Argument, "secret") {
			t.Fatalf("a refused USE reached the database: %q", e.Argument)
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestStoreOutageRefusesStatements(t *testing.T) {
	s := newStack(t, stackOptions{})
	db := s.driver(t, "test")
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "INSERT INTO accounts (id, owner) VALUES (?, ?)", 1, "before"); err != nil {
		t.Fatal(err)
	}
	s.NATS.Stop()
	// Without arguments the driver sends the text protocol.
	_, err = conn.ExecContext(ctx, "INSERT INTO accounts (id, owner) VALUES (2, 'during')")
	var pe *gomysql.MySQLError
	if !errors.As(err, &pe) || pe.Number != 1105 || !strings.Contains(pe.Message, "audit store unavailable") {
		t.Fatalf("during the outage: %v", err)
	}
	if err := s.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err = conn.ExecContext(ctx, "INSERT INTO accounts (id, owner) VALUES (?, ?)", 3, "after")
		if err == nil {
			break
		}
		if !errors.As(err, &pe) || pe.Number != 1105 || time.Now().After(deadline) {
			t.Fatalf("after the outage: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var owners string
	if err := conn.QueryRowContext(ctx, "SELECT GROUP_CONCAT(owner ORDER BY id) FROM accounts").Scan(&owners); err != nil || owners != "before,after" {
		t.Fatalf("rows %q %v", owners, err)
	}
	logged, err := s.db.GeneralLogEntries()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range logged {
		if strings.Contains(e.Argument, "during") {
			t.Fatalf("a refused statement reached the database: %q", e.Argument)
		}
	}
	conn.Close()
	db.Close()
	evs := s.WaitAudit(t, "session end with its events stored", settled(1))
	agenttest.CheckGapless(t, evs)
	refused := 0
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		if r["db_error_code"] == "1105" {
			refused++
		}
	}
	during := 0
	for _, e := range agenttest.OfType(evs, "db.session.query") {
		if strings.Contains(e["db_query"].(string), "during") {
			during++
		}
	}
	if refused == 0 || during == 0 {
		t.Fatalf("refusals %d, refused statement events %d", refused, during)
	}
	groundTruth(t, s, evs, "app")
}

// TestEd25519UserAndLongData: a MariaDB user of the ed25519 plugin (the
// server switches the agent to client_ed25519, answered for the empty
// password beside the certificate), and a parameter sent as long data.
func TestEd25519UserAndLongData(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.db.MustExec(t, "INSTALL SONAME 'auth_ed25519'")
	// PASSWORD('') would store an empty string, which no signature
	// matches; the key of the empty password is what the agent signs
	// with.
	s.db.CreateUserRequire(t, "edu", "IDENTIFIED VIA ed25519 USING '"+wire.Ed25519AuthString("")+"' REQUIRE SUBJECT '/CN=edu'")
	// A small packet limit makes the driver send a large argument with
	// COM_STMT_SEND_LONG_DATA.
	db := s.driverAs(t, "edu", "test", func(c *gomysql.Config) { c.MaxAllowedPacket = 4096 })
	big := strings.Repeat("x", 3000)
	if _, err := db.Exec("INSERT INTO accounts (id, owner) VALUES (?, ?)", 1, "ed"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("UPDATE accounts SET blob_col = LEFT(?, 64) WHERE id = ?", []byte(big), 1); err != nil {
		t.Fatal(err)
	}
	var user string
	if err := db.QueryRow("SELECT CURRENT_USER()").Scan(&user); err != nil || !strings.HasPrefix(user, "edu@") {
		t.Fatalf("current user %q %v", user, err)
	}
	db.Close()
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	conn := agenttest.OfType(evs, "db.session.mysql.connected")
	if len(conn) == 0 || conn[0]["db_auth_plugin"] != "client_ed25519" {
		t.Fatalf("connected %v", conn)
	}
	long := agenttest.OfType(evs, "db.session.mysql.send_long_data")
	if len(long) == 0 || long[0]["db_bytes"].(float64) <= 0 {
		t.Fatalf("long data events %v", long)
	}
	found := false
	for _, e := range agenttest.OfType(evs, "db.session.mysql.execute") {
		if p := toStrings(e["db_query_parameters"]); len(p) == 2 && p[0] == big {
			found = true
		}
	}
	if !found {
		t.Fatal("the execute event lacks the long-data parameter's value")
	}
	groundTruth(t, s, evs, "edu")
}
