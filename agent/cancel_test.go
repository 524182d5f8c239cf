package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// pgCount runs a count query directly on the database, as its superuser.
func pgCount(ctx context.Context, t *testing.T, admin *pgconn.PgConn, sql string) int {
	t.Helper()
	res, err := admin.Exec(ctx, sql).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	n := 0
	for _, r := range res {
		for _, row := range r.Rows {
			for _, c := range row[0] {
				n = n*10 + int(c-'0')
			}
		}
	}
	return n
}

// waitCount polls until the count query gives want, and returns how long
// that took after since.
func waitCount(ctx context.Context, t *testing.T, admin *pgconn.PgConn, sql string, want int, since time.Time) time.Duration {
	t.Helper()
	for pgCount(ctx, t, admin, sql) != want {
		if ctx.Err() != nil {
			t.Fatalf("%s never gave %d", sql, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(since)
}

// TestLockCancelsRunningStatement: a lock placed while `select
// pg_sleep(60)` runs through the agent stops the statement in the
// database, not only the client's session; and an UPDATE in a transaction
// held by pg_sleep ends without changing the row. The terminate event says
// how the statement was cancelled.
func TestLockCancelsRunningStatement(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgconn.Connect(ctx, w.pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	execSQL(ctx, t, admin, "create table if not exists public.acct (id int primary key, balance int); insert into public.acct values (1, 100) on conflict do nothing; grant all on public.acct to app")
	carol := w.cert("carol", time.Hour)
	by := daemon.LocalActor()
	const sleeping = "select count(*) from pg_stat_activity where state = 'active' and query like '%pg_sleep(60)%' and pid <> pg_backend_pid()"

	for i, stmt := range []string{
		"select pg_sleep(60)",
		"begin; update public.acct set balance = balance - 50 where id = 1; select pg_sleep(60); commit",
	} {
		conn, err := w.connect(ctx, carol)
		if err != nil {
			t.Fatal(err)
		}
		rr := conn.Exec(ctx, stmt)
		done := make(chan error, 1)
		go func() {
			_, err := rr.ReadAll()
			done <- err
		}()
		waitCount(ctx, t, admin, sleeping, 1, time.Now())
		start := time.Now()
		lk, err := w.broker.Store.CreateLock(ctx, by, state.NewLock{TargetUser: "carol", Message: "stop now"})
		if err != nil {
			t.Fatal(err)
		}
		took := waitCount(ctx, t, admin, sleeping, 0, start)
		t.Logf("%q: lock to no active pg_sleep in pg_stat_activity: %s", stmt, took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("%q still ran %s after the lock", stmt, took)
		}
		if err := <-done; err == nil {
			t.Errorf("%q: no error after the lock", stmt)
		}
		conn.Close(ctx)
		if err := w.broker.Store.DeleteLock(ctx, by, lk.ID); err != nil {
			t.Fatal(err)
		}
		w.caughtUp(ctx)
		if i == 1 {
			if n := pgCount(ctx, t, admin, "select balance from public.acct where id = 1"); n != 100 {
				t.Fatalf("balance %d after the lock, want 100 (the UPDATE must not commit)", n)
			}
		}
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		terms := agenttest.OfType(w.stored(ctx, events.AuditStream), "db.session.terminate")
		if len(terms) == 2 {
			for _, e := range terms {
				if !strings.HasPrefix(e["cancel"].(string), "cancel request to backend ") || e["cancel_confirmed"] != true || e["cancel_error"] != nil {
					t.Fatalf("terminate event: %v", e)
				}
				t.Logf("terminate: cancel %q confirmed after %.1fms", e["cancel"], e["cancel_ns"].(float64)/1e6)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d terminate events, want 2", len(terms))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
