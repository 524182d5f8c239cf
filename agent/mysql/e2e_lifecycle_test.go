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
)

func TestLockEndsTheSession(t *testing.T) {
	src := &agenttest.Locks{}
	s := newStack(t, stackOptions{state: src})
	db := s.driver(t, "test")
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	src.Lock("alice", "incident 42")
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	end := agenttest.OfType(evs, "db.session.end")[0]
	if end["reason"] != "locked" {
		t.Fatalf("end %v", end)
	}
	if len(agenttest.OfType(evs, "db.session.terminate")) != 1 {
		t.Fatalf("no terminate event")
	}
	// The client reads why with its next command.
	_, err = conn.ExecContext(ctx, "SELECT 'after the lock'")
	var pe *gomysql.MySQLError
	if !errors.As(err, &pe) || pe.Number != 1927 || !strings.Contains(pe.Message, "incident 42") {
		t.Fatalf("after the lock: %v", err)
	}
	// And a new session is refused while the lock holds.
	if _, err := db.ExecContext(ctx, "SELECT 2"); err == nil || !strings.Contains(err.Error(), "incident 42") {
		t.Fatalf("new session under the lock: %v", err)
	}
	agenttest.CheckGapless(t, s.Audit(t))
	logged, _ := s.db.GeneralLogEntries()
	for _, e := range logged {
		if strings.Contains(e.Argument, "after the lock") || strings.Contains(e.Argument, "SELECT 2") {
			t.Fatalf("a statement reached the database after the lock: %q", e.Argument)
		}
	}
}

// TestLockKillsRunningQuery: a lock placed while `select sleep(60)` runs
// through the agent stops it in the database within a second (the
// processlist shows it no more), and the terminate event says how.
func TestLockKillsRunningQuery(t *testing.T) {
	src := &agenttest.Locks{}
	s := newStack(t, stackOptions{state: src})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := sql.Open("mysql", s.db.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	sleeping := func() int {
		var n int
		if err := admin.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE '%sleep(60)%' AND id <> CONNECTION_ID()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	db := s.driver(t, "test")
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	done := make(chan error, 1)
	go func() {
		_, err := conn.ExecContext(ctx, "select sleep(60)")
		done <- err
	}()
	for sleeping() != 1 {
		if ctx.Err() != nil {
			t.Fatal("select sleep(60) never showed in the processlist")
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := src.LockWait(t, "alice", "stop now", time.Minute, "select sleep(60) gone from the processlist", func() bool { return sleeping() == 0 })
	t.Logf("lock to no sleep(60) in the processlist: %s", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("select sleep(60) ran %s after the lock", took)
	}
	<-done
	evs := s.WaitAudit(t, "session end", agenttest.Count("db.session.end", 1))
	term := agenttest.OfType(evs, "db.session.terminate")
	if len(term) != 1 || !strings.HasPrefix(term[0]["cancel"].(string), "KILL QUERY ") || term[0]["cancel_confirmed"] != true {
		t.Fatalf("terminate %v", term)
	}
	t.Logf("terminate: %q confirmed after %.1fms", term[0]["cancel"], term[0]["cancel_ns"].(float64)/1e6)
	agenttest.CheckGapless(t, s.Audit(t))
}
