package agent_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// TestRemovedUserEndsSessions: removing a user ends their live session at
// once with a message saying so, and their certificate opens no new one
// (a denied start, as any denial). The agent follows STATE with its own
// projection, as an agent on another machine does. Removal-to-disconnect
// and removal-to-refusal are measured over 10 trials and logged; each
// must stay under a second.
func TestRemovedUserEndsSessions(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	by := daemon.LocalActor()
	const trials = 10
	var ended, refused []time.Duration
	for i := range trials {
		name := fmt.Sprintf("leaver-%d", i)
		if _, err := w.broker.Store.CreateUser(ctx, by, state.NewUser{Name: name, Roles: []string{"dba"}}); err != nil {
			t.Fatal(err)
		}
		cert := w.cert(name, time.Hour)
		w.caughtUp(ctx)
		conn, err := w.connect(ctx, cert)
		if err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
		execSQL(ctx, t, conn, "select 1")
		if err := w.broker.Store.DeleteUser(ctx, by, name); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		pe := waitEnded(ctx, t, conn)
		ended = append(ended, time.Since(start))
		conn.Close(ctx)
		if pe.Code != "57P01" || !strings.Contains(pe.Message, "session ended: user "+name+" no longer exists") {
			t.Fatalf("trial %d: %s %q", i, pe.Code, pe.Message)
		}
		for {
			c, err := w.connect(ctx, cert)
			if err != nil {
				if !strings.Contains(err.Error(), "access denied") || !strings.Contains(err.Error(), "user "+name+" no longer exists") {
					t.Fatalf("trial %d: new session of a removed user: %v", i, err)
				}
				break
			}
			c.Close(ctx)
			if time.Since(start) > 5*time.Second {
				t.Fatalf("trial %d: the removed user still opens sessions", i)
			}
		}
		refused = append(refused, time.Since(start))
	}
	stats := func(d []time.Duration) string {
		s := slices.Clone(d)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return fmt.Sprintf("median %s, max %s, min %s", s[len(s)/2].Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond), s[0].Round(time.Microsecond))
	}
	t.Logf("users rm → live session ended at the agent, %d trials: %s", trials, stats(ended))
	t.Logf("users rm → new session refused at the agent, %d trials: %s", trials, stats(refused))
	if slices.Max(ended) > time.Second || slices.Max(refused) > time.Second {
		t.Fatalf("the removal took more than a second to reach the agent")
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		audit := w.stored(ctx, events.AuditStream)
		terms, denied := 0, 0
		for _, e := range agenttest.OfType(audit, "db.session.terminate") {
			if strings.HasPrefix(e["user"].(string), "leaver-") && strings.Contains(e["message"].(string), "no longer exists") {
				terms++
			}
		}
		for _, s := range agenttest.OfType(audit, "db.session.start") {
			if s["success"] == false && strings.HasPrefix(s["user"].(string), "leaver-") && strings.Contains(s["error"].(string), "no longer exists") {
				denied++
			}
		}
		if terms == trials && denied == trials {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d terminate and %d denied start events for %d trials", terms, denied, trials)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRemovedRoleEndsSessionsThatNeededIt: taking a role from a user ends
// their live session only when the roles left no longer allow it, and the
// same certificate opens no new session with the role gone.
func TestRemovedRoleEndsSessionsThatNeededIt(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	by := daemon.LocalActor()
	if _, err := w.broker.Store.CreateUser(ctx, by, state.NewUser{Name: "gus", Roles: []string{"dba", "dba-reviewer"}}); err != nil {
		t.Fatal(err)
	}
	gus := w.cert("gus", time.Hour)
	w.caughtUp(ctx)
	conn, err := w.connect(ctx, gus)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	setRoles := func(roles ...string) {
		t.Helper()
		if _, err := w.broker.Store.UpdateUser(ctx, by, "gus", func(u *state.User) error { u.Roles = roles; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	// dba-reviewer allows no session: the session goes on without it.
	setRoles("dba")
	w.caughtUp(ctx)
	time.Sleep(200 * time.Millisecond)
	execSQL(ctx, t, conn, "select 'still here'")

	setRoles("dba-reviewer")
	start := time.Now()
	pe := waitEnded(ctx, t, conn)
	t.Logf("role removed → live session ended at the agent after %s", time.Since(start).Round(time.Microsecond))
	if pe.Code != "57P01" || !strings.Contains(pe.Message, "user gus no longer holds role dba") {
		t.Fatalf("session after dba was taken: %s %q", pe.Code, pe.Message)
	}
	if _, err := w.connect(ctx, gus); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("new session with a certificate naming a removed role: %v", err)
	}
}
