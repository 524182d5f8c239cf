package mysql_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"
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

	evs := s.waitAudit(t, "local infile event", count("db.session.mysql.local_infile", 1))
	var stmt bool
	for _, e := range ofType(evs, "db.session.query") {
		stmt = stmt || e["db_query"] == loadStatement(path)
	}
	if !stmt {
		t.Fatal("no query event for the LOAD DATA statement")
	}
	f := ofType(evs, "db.session.mysql.local_infile")[0]
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
	checkGapless(t, evs)
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
	evs := s.waitAudit(t, "refused local infile event", count("db.session.mysql.local_infile", 1))
	f := ofType(evs, "db.session.mysql.local_infile")[0]
	if f["db_local_infile"] != path || f["db_local_infile_refused"] != true || f["success"] != false {
		t.Fatalf("local infile event %v", f)
	}
	groundTruth(t, s, evs, "app")
	checkGapless(t, evs)
}
