package mysql_test

import (
	"database/sql"
	"reflect"
	"strings"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

// compressedDriver is the driver asking for the compressed protocol.
func (s *stack) compressedDriver(t *testing.T) *sql.DB {
	t.Helper()
	return s.driverAs(t, "app", "test", func(c *gomysql.Config) {
		if err := c.Apply(gomysql.EnableCompression(true)); err != nil {
			t.Fatal(err)
		}
	})
}

// A client asking for compression gets it on both legs (the agent
// inflates what it decodes): the same results as without it, small and
// large, text and prepared, and every statement audited.
func TestCompressedProtocol(t *testing.T) {
	s := newStack(t, stackOptions{})
	plain := s.driver(t, "test")
	zipped := s.compressedDriver(t)
	for _, db := range []*sql.DB{plain, zipped} {
		db.SetMaxOpenConns(1)
	}
	if _, err := zipped.Exec("CREATE TABLE IF NOT EXISTS zrows (id INT PRIMARY KEY, body LONGTEXT)"); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("compress me please ", 20000) // 380 KB, compresses well
	for i := range 50 {
		if _, err := zipped.Exec("INSERT INTO zrows VALUES (?, ?)", i, big[:1000*(i+1)]); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		"SELECT 1",
		"SELECT id, body FROM zrows ORDER BY id",
		"SELECT REPEAT('x', 20000000)", // inflates past one compressed packet
		"SELECT seq FROM seq_1_to_20000",
	} {
		a, b := readResult(t, plain, q), readResult(t, zipped, q)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%q: compressed result differs (%d and %d rows)", q, len(a.rows), len(b.rows))
		}
	}
	for db, want := range map[*sql.DB]string{plain: "OFF", zipped: "ON"} {
		var name, v string
		if err := db.QueryRow("SHOW SESSION STATUS LIKE 'Compression'").Scan(&name, &v); err != nil || v != want {
			t.Fatalf("the database's session compression: %v %q, want %s", err, v, want)
		}
	}
	var got string
	if err := zipped.QueryRow("SELECT body FROM zrows WHERE id = ?", 49).Scan(&got); err != nil || got != big[:50000] {
		t.Fatalf("prepared read: %v, %d bytes", err, len(got))
	}
	if _, err := zipped.Exec("SELECT nope FROM zrows"); err == nil || !strings.Contains(err.Error(), "1054") {
		t.Fatalf("error through compression: %v", err)
	}
	evs := s.WaitAudit(t, "compressed session's statements", func(evs []map[string]any) bool {
		for _, ev := range agenttest.OfType(evs, "db.session.query") {
			if ev["db_query"] == "SELECT nope FROM zrows" {
				return true
			}
		}
		return false
	})
	agenttest.CheckGapless(t, evs)
	compressed := 0
	for _, ev := range agenttest.OfType(evs, "db.session.mysql.connected") {
		if strings.Contains(ev["db_capabilities"].(string), "CLIENT_COMPRESS") {
			compressed++
		}
	}
	if compressed != 1 {
		t.Fatalf("%d sessions recorded as compressed, want 1", compressed)
	}
	groundTruth(t, s, evs, "app")
}

// The mariadb client's --compress, through the agent's own MySQL port.
func TestCompressedMariaDBCLI(t *testing.T) {
	s := newStack(t, stackOptions{})
	h, p := hostPort(s.direct)
	out, err := mariadbCLI(t, "-h"+h, "-P"+p, "--ssl-ca="+s.HostCAFile, "--ssl-cert="+s.UserCertFile, "--ssl-key="+s.UserKeyFile,
		"--ssl-verify-server-cert", "--compress", "-uapp", "test", "-e",
		"SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Compression'; SELECT LENGTH(REPEAT('ab', 100000)); SELECT COUNT(*) FROM seq_1_to_5000")
	// The database's own session is compressed too: the agent asked for
	// it on the client's behalf.
	if err != nil || out != "ON\n200000\n5000\n" {
		t.Fatalf("mariadb --compress: %v\n%q", err, out)
	}
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	agenttest.CheckGapless(t, evs)
	conn := agenttest.OfType(evs, "db.session.mysql.connected")
	if len(conn) != 1 || !strings.Contains(conn[0]["db_capabilities"].(string), "CLIENT_COMPRESS") {
		t.Fatalf("connected %v", conn)
	}
}

// LOAD DATA LOCAL INFILE through compression on both legs: the file's
// packets follow the server's request with the compressed sequence the
// client continues, and the database takes them.
func TestCompressedLoadDataLocalInfile(t *testing.T) {
	s := newStack(t, stackOptions{})
	db := s.compressedDriver(t)
	const n = 3000
	path, _ := infileRows(t, n)
	res, err := db.Exec(loadStatement(path))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := res.RowsAffected(); got != n {
		t.Fatalf("rows affected %d, want %d", got, n)
	}
	var stored int
	if err := db.QueryRow("SELECT COUNT(*) FROM accounts").Scan(&stored); err != nil || stored != n {
		t.Fatalf("%d rows in the table: %v", stored, err)
	}
	evs := s.WaitAudit(t, "the file's event", agenttest.Count("db.session.mysql.local_infile", 1))
	agenttest.CheckGapless(t, evs)
}
