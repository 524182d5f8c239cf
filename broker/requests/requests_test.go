package requests_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/requests"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/schemas"
)

const roles = `
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
      approvals: 2
      max_duration: 2h
      pending_ttl: 30m
---
kind: role
metadata: {name: reviews-dba}
spec:
  allow:
    review_requests:
      roles: [dba]
---
kind: role
metadata: {name: reviews-other}
spec:
  allow:
    review_requests:
      roles: [other]
`

type env struct {
	js    jetstream.JetStream
	store *state.Store
	clock atomic.Int64 // unix nanoseconds
}

func (e *env) now() time.Time { return time.Unix(0, e.clock.Load()) }

func newEnv(t *testing.T) *env {
	t.Helper()
	srv, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(t.TempDir(), "nats"), Listen: natsserver.InProcessOnly})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	e := &env{}
	e.clock.Store(time.Now().UnixNano())
	if e.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := events.EnsureStreams(ctx, e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if e.store, err = state.Open(ctx, e.js, "test"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.store.Close)
	rs, err := access.Parse([]byte(roles))
	if err != nil {
		t.Fatal(err)
	}
	admin := state.Actor{User: "admin", Roles: []string{"editor"}}
	for _, r := range rs {
		if _, err := e.store.UpsertRole(ctx, admin, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []state.NewUser{
		{Name: "alice", Roles: []string{"asks-dba"}},
		{Name: "r1", Roles: []string{"reviews-dba"}},
		{Name: "r2", Roles: []string{"reviews-dba", "asks-dba"}},
		{Name: "mallory", Roles: []string{"reviews-other"}},
	} {
		if _, err := e.store.CreateUser(ctx, admin, u); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *env) service(t *testing.T) *requests.Service {
	t.Helper()
	s, err := requests.New(context.Background(), e.js, e.store, requests.Options{Now: e.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func who(e *env, name string) identity.Identity {
	u, _ := e.store.User(name)
	return identity.Identity{User: u.Name, Roles: u.Roles, Traits: u.Traits}
}

// stateEvents returns the access-request events in STATE, validated
// against their schemas, as type:state.
func (e *env) stateEvents(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	st, _ := e.js.Stream(ctx, events.StateStream)
	info, _ := st.Info(ctx)
	var out []string
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil || !strings.HasPrefix(m.Subject, "state.access_request.") {
			continue
		}
		if err := schemas.Validate(m.Data); err != nil {
			t.Fatalf("%s: %v\n%s", m.Subject, err, m.Data)
		}
		var ev struct{ Type, State, Verdict string }
		_ = json.Unmarshal(m.Data, &ev)
		out = append(out, strings.TrimPrefix(ev.Type, "access_request.")+":"+ev.State+ev.Verdict)
	}
	return out
}

func TestThresholdsAndRules(t *testing.T) {
	e := newEnv(t)
	s := e.service(t)
	ctx := context.Background()
	alice := who(e, "alice")

	if _, err := s.Create(ctx, alice, requests.CreateRequest{Roles: []string{"reviews-dba"}}); !errors.Is(err, requests.ErrForbidden) {
		t.Fatalf("requesting a role no rule allows: %v", err)
	}
	if _, err := s.Create(ctx, alice, requests.CreateRequest{Roles: []string{"dba"}, Duration: 3 * time.Hour}); !errors.Is(err, state.ErrInvalid) ||
		!strings.Contains(err.Error(), "max_duration") {
		t.Fatalf("longer than max_duration: %v", err)
	}
	if _, err := s.Create(ctx, alice, requests.CreateRequest{Roles: []string{"nosuch"}}); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("unknown role: %v", err)
	}
	r, err := s.Create(ctx, alice, requests.CreateRequest{Roles: []string{"dba"}, Reason: "migration"})
	if err != nil {
		t.Fatal(err)
	}
	if r.ApprovalsNeeded != 2 || r.State != state.RequestPending || r.Expires.Sub(e.now()) > 2*time.Hour || r.PendingUntil.Sub(r.Created) != 30*time.Minute {
		t.Fatalf("new request: %+v", r)
	}
	if _, err := s.Review(ctx, alice, r.ID, events.ReviewApprove, ""); !errors.Is(err, requests.ErrForbidden) {
		t.Fatalf("self-approval: %v", err)
	}
	if _, err := s.Review(ctx, who(e, "mallory"), r.ID, events.ReviewApprove, ""); !errors.Is(err, requests.ErrForbidden) {
		t.Fatalf("a reviewer of other roles: %v", err)
	}
	if got, err := s.Review(ctx, who(e, "r1"), r.ID, events.ReviewApprove, "fine"); err != nil || got.State != state.RequestPending {
		t.Fatalf("first approval: %v %+v", err, got)
	}
	if _, err := s.Review(ctx, who(e, "r1"), r.ID, events.ReviewApprove, ""); err == nil || !strings.Contains(err.Error(), "already reviewed") {
		t.Fatalf("second verdict by the same reviewer: %v", err)
	}
	if _, err := s.Grant("alice", []string{r.ID}); !errors.Is(err, requests.ErrForbidden) {
		t.Fatalf("grant of a pending request: %v", err)
	}
	got, err := s.Review(ctx, who(e, "r2"), r.ID, events.ReviewApprove, "ok")
	if err != nil || got.State != state.RequestApproved {
		t.Fatalf("second approval: %v %+v", err, got)
	}
	g, err := s.Grant("alice", []string{r.ID})
	if err != nil || !slices.Equal(g.Roles, []string{"dba"}) || !g.Until.Equal(r.Expires) {
		t.Fatalf("grant: %v %+v", err, g)
	}
	if _, err := s.Grant("r1", []string{r.ID}); !errors.Is(err, requests.ErrForbidden) {
		t.Fatalf("someone else's grant: %v", err)
	}
	// The agent's view (broker/state) agrees.
	st, _ := e.js.Stream(ctx, events.StateStream)
	info, _ := st.Info(ctx)
	if err := e.store.WaitFor(ctx, info.State.LastSeq); err != nil {
		t.Fatal(err)
	}
	if sr, ok := e.store.AccessRequest(r.ID); !ok || sr.State != state.RequestApproved {
		t.Fatalf("state projection: %+v", sr)
	}

	// One denial denies, whatever the approvals.
	r2, err := s.Create(ctx, alice, requests.CreateRequest{Roles: []string{"dba"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Review(ctx, who(e, "r1"), r2.ID, events.ReviewApprove, ""); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Review(ctx, who(e, "r2"), r2.ID, events.ReviewDeny, "not during the freeze"); err != nil ||
		got.State != state.RequestDenied || got.UpdateReason != "not during the freeze" {
		t.Fatalf("denial: %v %+v", err, got)
	}
	want := []string{"create:", "review:approve", "review:approve", "update:approved", "create:", "review:approve", "review:deny", "update:denied"}
	if got := e.stateEvents(t); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

func TestExpiryAndRestart(t *testing.T) {
	e := newEnv(t)
	s := e.service(t)
	ctx := context.Background()
	alice := who(e, "alice")
	pending, err := s.Create(ctx, alice, requests.CreateRequest{Roles: []string{"dba"}})
	if err != nil {
		t.Fatal(err)
	}
	granted, err := s.Create(ctx, alice, requests.CreateRequest{Roles: []string{"dba"}, Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, rv := range []string{"r1", "r2"} {
		if _, err := s.Review(ctx, who(e, rv), granted.ID, events.ReviewApprove, ""); err != nil {
			t.Fatal(err)
		}
	}
	if changed, err := s.Sweep(ctx); err != nil || len(changed) != 0 {
		t.Fatalf("sweep before anything is due: %v %v", changed, err)
	}
	e.clock.Add(int64(31 * time.Minute))
	changed, err := s.Sweep(ctx)
	if err != nil || !slices.Equal(changed, []string{pending.ID}) {
		t.Fatalf("sweep after the pending TTL: %v %v", changed, err)
	}
	if _, err := s.Review(ctx, who(e, "r1"), pending.ID, events.ReviewApprove, ""); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("review of an expired request: %v", err)
	}
	e.clock.Add(int64(30 * time.Minute))
	if changed, err := s.Sweep(ctx); err != nil || !slices.Equal(changed, []string{granted.ID}) {
		t.Fatalf("sweep after the grant: %v %v", changed, err)
	}
	if _, err := s.Grant("alice", []string{granted.ID}); !errors.Is(err, requests.ErrForbidden) {
		t.Fatalf("grant after its end: %v", err)
	}
	before, _ := json.Marshal(s.List())
	// A new service (a restarted broker) replays the same requests.
	after, _ := json.Marshal(e.service(t).List())
	if string(before) != string(after) {
		t.Fatalf("after a restart:\n%s\nbefore:\n%s", after, before)
	}
}

// TestConcurrentReviews: two brokers review the same request at once; the
// appends are serialised by the subject's expected sequence, both reviews
// count, and the request is approved exactly once.
func TestConcurrentReviews(t *testing.T) {
	e := newEnv(t)
	a, b := e.service(t), e.service(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		r, err := a.Create(ctx, who(e, "alice"), requests.CreateRequest{Roles: []string{"dba"}})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j, svc := range []*requests.Service{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[j] = svc.Review(ctx, who(e, []string{"r1", "r2"}[j]), r.ID, events.ReviewApprove, "")
			}()
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("round %d: %v", i, errs)
		}
		// Whichever broker saw both reviews decided; the other follows.
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		got, err := b.Wait(wctx, r.ID)
		cancel()
		if err != nil || got.State != state.RequestApproved || len(got.Reviews) != 2 {
			t.Fatalf("round %d: %+v", i, got)
		}
	}
	approvals := 0
	for _, ev := range e.stateEvents(t) {
		if ev == "update:approved" {
			approvals++
		}
	}
	if approvals != 5 {
		t.Fatalf("%d approvals recorded for 5 requests", approvals)
	}
}
