package daemon_test

import (
	"bytes"
	"slices"
	"strconv"
	"testing"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/locks"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/requests"
	"github.com/tollgate-db/tollgate/broker/trail"
	"github.com/tollgate-db/tollgate/events"
)

const trailRoles = `
kind: role
metadata: {name: dba}
spec:
  allow:
    db_labels: {env: prod}
    db_users: [admin]
---
kind: role
metadata: {name: asks-dba}
spec:
  allow:
    request:
      roles: [dba]
`

// Admin actions made through the broker are audit events in AUDIT, each
// with its actor, and no secret of them reaches the stream.
func TestAdminActionsAudited(t *testing.T) {
	b := startBroker(t, login.Options{})
	ctx := ctxT(t)
	a := b.Admin.As(admin, "")
	if _, err := a.UpsertRoles(ctx, trailRoles); err != nil {
		t.Fatal(err)
	}
	invite := b.addUser(t, "alice", "asks-dba")
	if _, _, err := b.login(t, b.client(t, nil), "alice", goodPassword, invite); err != nil {
		t.Fatal(err)
	}
	// Change a role.
	if _, err := a.UpsertRoles(ctx, `
kind: role
metadata: {name: dba}
spec:
  allow:
    db_labels: {env: staging}
    db_users: [admin, reader]
`); err != nil {
		t.Fatal(err)
	}
	tok, err := a.AddToken(ctx, api.AddTokenRequest{Type: "db"})
	if err != nil {
		t.Fatal(err)
	}
	alice := identity.Identity{User: "alice", Roles: []string{"asks-dba"}}
	r, err := b.Requests.Create(ctx, alice, requests.CreateRequest{Roles: []string{"dba"}, Reason: "migration"})
	if err != nil {
		t.Fatal(err)
	}
	reviewer := identity.Identity{User: admin.User, Roles: admin.Roles}
	if _, err := b.Requests.Review(ctx, reviewer, r.ID, events.ReviewApprove, "ok for today"); err != nil {
		t.Fatal(err)
	}
	lk := locks.Local{Store: b.Store, By: admin}
	l, err := lk.AddLock(ctx, api.AddLockRequest{TargetUser: "alice", Message: "incident 7"})
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.RemoveLock(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := b.Trail.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	want := []struct{ typ, actor, field, value string }{
		{"role.create", admin.User, "name", "asks-dba"},
		{"user.create", admin.User, "name", "alice"},
		{"user.password_set", "alice", "name", "alice"},
		{"role.update", admin.User, "name", "dba"},
		{"token.create", admin.User, "token_id", tok.Token.ID},
		{"access_request.create", "alice", "request_id", r.ID},
		{"access_request.update", admin.User, "state", "approved"},
		{"lock.create", admin.User, "target_user", "alice"},
		{"lock.delete", admin.User, "lock_id", l.ID},
		{"user.delete", admin.User, "name", "alice"},
	}
	for _, w := range want {
		evs := b.audit(t, w.typ)
		i := slices.IndexFunc(evs, func(e auditEvent) bool { return e.str(w.field) == w.value })
		if i < 0 {
			t.Errorf("no %s event with %s=%s in AUDIT (%d of the type)", w.typ, w.field, w.value, len(evs))
			continue
		}
		e := evs[i]
		if e.str("user") != w.actor {
			t.Errorf("%s: actor %q, want %q", w.typ, e.str("user"), w.actor)
		}
		if w.actor == admin.User {
			if roles, _ := e.m["roles"].([]any); len(roles) != 1 || roles[0] != admin.Roles[0] {
				t.Errorf("%s: actor's roles %v, want %v", w.typ, e.m["roles"], admin.Roles)
			}
		}
	}
	// The role update carries the new spec.
	up := b.lastAudit(t, "role.update")
	if spec, _ := up.m["role"].(map[string]any); spec == nil || !bytes.Contains(up.raw, []byte("staging")) {
		t.Errorf("role.update without the new spec: %s", up.raw)
	}
	b.sameAsState(t)
	b.noSecrets(t, goodPassword, invite, tok.Value)
}

// sameAsState checks that every STATE event has exactly one copy in AUDIT,
// the same bytes, in STATE's order, naming its STATE sequence.
func (b *testBroker) sameAsState(t *testing.T) {
	t.Helper()
	ctx := ctxT(t)
	st, err := b.js.Stream(ctx, events.StateStream)
	if err != nil {
		t.Fatal(err)
	}
	au, err := b.js.Stream(ctx, events.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	si, _ := st.Info(ctx)
	ai, _ := au.Info(ctx)
	var copies []string
	seqs := map[string]uint64{}
	for seq := ai.State.FirstSeq; seq <= ai.State.LastSeq; seq++ {
		m, err := au.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		s := m.Header.Get(trail.HeaderStateSeq)
		if s == "" {
			continue
		}
		n, _ := strconv.ParseUint(s, 10, 64)
		// A copy is a frame of the one event, its header naming the same
		// STATE sequence.
		f, err := events.DecodeFrame(m.Data)
		if err != nil {
			t.Fatalf("AUDIT %d: %v", seq, err)
		}
		if f.Header == nil || f.Header.StateSeq != n || len(f.Events) != 1 {
			t.Fatalf("AUDIT %d: a copy of STATE %d that is not a frame of it: %s", seq, n, m.Data)
		}
		copies = append(copies, string(f.Events[0]))
		seqs[string(f.Events[0])] = n
	}
	if uint64(len(copies)) != si.State.Msgs {
		t.Fatalf("%d copies in AUDIT of %d STATE events", len(copies), si.State.Msgs)
	}
	for i, seq := 0, si.State.FirstSeq; seq <= si.State.LastSeq; i, seq = i+1, seq+1 {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if copies[i] != string(m.Data) || seqs[copies[i]] != seq {
			t.Fatalf("AUDIT copy %d differs from STATE sequence %d:\n%s\n%s", i, seq, copies[i], m.Data)
		}
	}
}
