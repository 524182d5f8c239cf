package mysql_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

// infileRows writes a CSV of n rows and returns its path and contents.
func infileRows(t *testing.T, n int) (string, string) {
	t.Helper()
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%d,owner-%d-%s\n", i, i, strings.Repeat("x", i%30))
	}
	path := filepath.Join(t.TempDir(), "accounts.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	gomysql.RegisterLocalFile(path)
	t.Cleanup(func() { gomysql.DeregisterLocalFile(path) })
	return path, b.String()
}

func loadStatement(path string) string {
	return "LOAD DATA LOCAL INFILE '" + path + "' INTO TABLE accounts FIELDS TERMINATED BY ',' (id, owner)"
}

func TestLoadDataLocalInfile(t *testing.T) {
	s := newStack(t, stackOptions{})
	db := s.driver(t, "test")
	ctx := context.Background()
	const n = 5000 // several data packets
	path, data := infileRows(t, n)
	res, err := db.ExecContext(ctx, loadStatement(path))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := res.RowsAffected(); got != n {
		t.Fatalf("rows affected %d, want %d", got, n)
	}
	// The rows in the table are the file's.
	rows, err := db.QueryContext(ctx, "SELECT id, owner FROM accounts ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var back strings.Builder
	for rows.Next() {
		var id int
		var owner string
		if err := rows.Scan(&id, &owner); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&back, "%d,%s\n", id, owner)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if back.String() != data {
		t.Fatalf("rows loaded through the agent differ from the file (%d vs %d bytes)", back.Len(), len(data))
	}

	evs := s.WaitAudit(t, "local infile event", agenttest.Count("db.session.mysql.local_infile", 1))
	var stmt bool
	for _, e := range agenttest.OfType(evs, "db.session.query") {
		stmt = stmt || e["db_query"] == loadStatement(path)
	}
	if !stmt {
		t.Fatal("no query event for the LOAD DATA statement")
	}
	f := agenttest.OfType(evs, "db.session.mysql.local_infile")[0]
	if f["db_local_infile"] != path || f["db_local_infile_bytes"] != float64(len(data)) || f["success"] != true {
		t.Fatalf("local infile event %v; want file %s and %d bytes", f, path, len(data))
	}
	if p, _ := f["db_local_infile_packets"].(float64); p < 1 {
		t.Fatalf("local infile event counts %v packets", f["db_local_infile_packets"])
	}
	// The file event comes after the statement and before its result.
	var qi, fi, ri float64 = -1, f["ei"].(float64), -1
	for _, e := range evs {
		switch {
		case e["type"] == "db.session.query" && e["db_query"] == loadStatement(path):
			qi = e["ei"].(float64)
		case e["type"] == "db.session.result" && qi >= 0 && ri < 0 && e["ei"].(float64) > qi:
			ri = e["ei"].(float64)
		}
	}
	if !(qi < fi && fi < ri) {
		t.Fatalf("order: statement ei %v, file ei %v, result ei %v", qi, fi, ri)
	}
	if strings.Contains(fmt.Sprint(evs), "owner-17-") {
		t.Fatal("file data recorded in an event")
	}
	groundTruth(t, s, evs, "app")
	agenttest.CheckGapless(t, evs)
}

func TestLoadDataLocalInfileRefusedByRole(t *testing.T) {
	s := newStack(t, stackOptions{roleOptions: "{mysql_local_infile: false}"})
	db := s.driver(t, "test")
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	path, _ := infileRows(t, 100)
	_, err = conn.ExecContext(ctx, loadStatement(path))
	var me *gomysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1148 || !strings.Contains(me.Message, "tollgate: LOAD DATA LOCAL INFILE is refused by your roles") {
		t.Fatalf("want the agent's ERR 1148, got %v", err)
	}
	// The session is still usable, and nothing was loaded.
	var rows int
	if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM accounts").Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("after the refusal: %d rows, %v", rows, err)
	}
	evs := s.WaitAudit(t, "refused local infile event", agenttest.Count("db.session.mysql.local_infile", 1))
	f := agenttest.OfType(evs, "db.session.mysql.local_infile")[0]
	if f["db_local_infile"] != path || f["db_local_infile_refused"] != true || f["success"] != false {
		t.Fatalf("local infile event %v", f)
	}
	groundTruth(t, s, evs, "app")
	agenttest.CheckGapless(t, evs)
}

func TestLoadDataLocalInfileMariaDBCLI(t *testing.T) {
	withInfileRoles(t, func(t *testing.T, s *stack, refuse bool) {
		h, p := hostPort(s.tunnel(t))
		path, data := infileRows(t, 300)
		// Statements on stdin, so --force goes on after an error in
		// the same session.
		cmd := exec.Command("mariadb", "--no-defaults", "--protocol=TCP", "--connect-timeout=10", "--batch", "--skip-column-names",
			"--local-infile=1", "--force", "-h"+h, "-P"+p, "-uapp", "test")
		cmd.Stdin = strings.NewReader(loadStatement(path) + ";\nSELECT COUNT(*) FROM accounts;\n")
		b, err := cmd.CombinedOutput()
		out := string(b)
		want := "300"
		if refuse {
			want = "0"
			if !strings.Contains(out, "ERROR 1148 (42000)") || !strings.Contains(out, "refused by your roles") {
				t.Fatalf("mariadb: %v\n%s", err, out)
			}
		} else if err != nil {
			t.Fatalf("mariadb: %v\n%s", err, out)
		}
		// The count goes to stdout, the error to stderr: either order.
		if !strings.Contains("\n"+out+"\n", "\n"+want+"\n") {
			t.Fatalf("mariadb counted rows: %s (want %s)", out, want)
		}
		evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
		f := agenttest.OfType(evs, "db.session.mysql.local_infile")
		if len(f) != 1 || f[0]["db_local_infile"] != path {
			t.Fatalf("local infile events %v", f)
		}
		if !refuse && f[0]["db_local_infile_bytes"] != float64(len(data)) {
			t.Fatalf("local infile event %v, want %d bytes", f[0], len(data))
		}
		groundTruth(t, s, evs, "app")
		agenttest.CheckGapless(t, evs)
	})
}

func TestLoadDataLocalInfileMultiStatements(t *testing.T) {
	withInfileRoles(t, func(t *testing.T, s *stack, refuse bool) {
		db := s.driverAs(t, "app", "test", func(c *gomysql.Config) { c.MultiStatements = true })
		path, _ := infileRows(t, 50)
		ctx := context.Background()
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = conn.ExecContext(ctx, "INSERT INTO accounts (id) VALUES (1000); "+loadStatement(path)+"; INSERT INTO accounts (id) VALUES (1001)")
		var n int
		if qerr := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM accounts").Scan(&n); qerr != nil {
			t.Fatalf("session unusable after %v: %v", err, qerr)
		}
		if refuse {
			var me *gomysql.MySQLError
			if !errors.As(err, &me) || me.Number != 1148 {
				t.Fatalf("want ERR 1148, got %v", err)
			}
			if n > 2 {
				t.Fatalf("%d rows after a refused LOAD DATA", n)
			}
		} else if err != nil || n != 52 {
			t.Fatalf("%d rows, %v", n, err)
		}
	})
}

// withInfileRoles runs run in a stack whose role allows LOAD DATA LOCAL
// INFILE and in one whose role refuses it.
func withInfileRoles(t *testing.T, run func(t *testing.T, s *stack, refuse bool)) {
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("refused=%v", refuse), func(t *testing.T) {
			o := stackOptions{}
			if refuse {
				o.roleOptions = "{mysql_local_infile: false}"
			}
			run(t, newStack(t, o), refuse)
		})
	}
}
