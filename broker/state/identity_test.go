package state

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/identity"
)

// A certificate's identity is cut to what the projection holds now:
// roles removed from the user go, roles of an approved request the
// certificate carries stay, and a removed user's certificate is refused,
// even after the name is taken again and after a restart from a snapshot.
// A name that never was a user (an identity file for a bot) keeps its
// roles.
func TestCurrentIdentity(t *testing.T) {
	srv := startServer(t, t.TempDir())
	st := srv.open(t)
	c := ctxT(t)
	if _, err := st.UpsertRole(c, admin, devRole(t)); err != nil {
		t.Fatal(err)
	}
	for _, nu := range []NewUser{{Name: "alice", Roles: []string{"access", "dev"}}, {Name: "bob", Roles: []string{"access"}}} {
		if _, err := st.CreateUser(c, admin, nu); err != nil {
			t.Fatal(err)
		}
	}
	// NotBefore is backdated as the CAs do.
	issued := func() time.Time { return time.Now().Add(-certBackdate) }
	cert := identity.Identity{User: "alice", Roles: []string{"access", "dev"}, Issued: issued()}
	now := time.Now()
	if got, err := st.CurrentIdentity(now, cert); err != nil || !slices.Equal(got.Roles, cert.Roles) {
		t.Fatalf("unchanged user: %v %v", got.Roles, err)
	}
	if _, err := st.UpdateUser(c, admin, "alice", func(u *User) error { u.Roles = []string{"access"}; return nil }); err != nil {
		t.Fatal(err)
	}
	got, err := st.CurrentIdentity(time.Now(), cert)
	if err != nil || !slices.Equal(got.Roles, []string{"access"}) || !slices.Equal(DroppedRoles(cert, got), []string{"dev"}) {
		t.Fatalf("role removed: %v %v", got.Roles, err)
	}

	// dev granted by an approved request alice made; bob's does not count.
	mine, err := st.CreateAccessRequest(c, admin, NewAccessRequest{Requester: "alice", Roles: []string{"dev"}, Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := st.CreateAccessRequest(c, admin, NewAccessRequest{Requester: "bob", Roles: []string{"dev"}, Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	granted := cert
	granted.AccessRequests = []string{mine.ID}
	if got, _ := st.CurrentIdentity(time.Now(), granted); !slices.Equal(got.Roles, []string{"access"}) {
		t.Fatalf("pending request granted %v", got.Roles)
	}
	for _, id := range []string{mine.ID, theirs.ID} {
		if _, err := st.UpdateAccessRequest(c, admin, id, RequestApproved, ""); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := st.CurrentIdentity(time.Now(), granted); !slices.Equal(got.Roles, []string{"access", "dev"}) {
		t.Fatalf("approved request: %v", got.Roles)
	}
	if got, _ := st.CurrentIdentity(time.Now().Add(2*time.Hour), granted); !slices.Equal(got.Roles, []string{"access"}) {
		t.Fatalf("request past its end: %v", got.Roles)
	}
	stolen := cert
	stolen.AccessRequests = []string{theirs.ID}
	if got, _ := st.CurrentIdentity(time.Now(), stolen); !slices.Equal(got.Roles, []string{"access"}) {
		t.Fatalf("another user's request: %v", got.Roles)
	}

	bot := identity.Identity{User: "ops-bot", Roles: []string{"editor"}, Issued: issued()}
	if got, err := st.CurrentIdentity(time.Now(), bot); err != nil || !slices.Equal(got.Roles, bot.Roles) {
		t.Fatalf("identity file for a name that is no user: %v %v", got.Roles, err)
	}

	if err := st.DeleteUser(c, admin, "alice"); err != nil {
		t.Fatal(err)
	}
	_, err = st.CurrentIdentity(time.Now(), cert)
	var rm *RemovedUserError
	if !errors.Is(err, ErrUserRemoved) || !errors.As(err, &rm) || !strings.Contains(err.Error(), "user alice no longer exists") {
		t.Fatalf("removed user: %v", err)
	}
	// Created again: the old certificate is still refused, a new one works.
	if _, err := st.CreateUser(c, admin, NewUser{Name: "alice", Roles: []string{"access"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CurrentIdentity(time.Now(), cert); !errors.Is(err, ErrUserRemoved) || !strings.Contains(err.Error(), "created again") {
		t.Fatalf("certificate of the removed user after the name was taken again: %v", err)
	}
	fresh := identity.Identity{User: "alice", Roles: []string{"access"}, Issued: issued()}
	if _, err := st.CurrentIdentity(time.Now(), fresh); err != nil {
		t.Fatalf("certificate of the new alice: %v", err)
	}

	if _, err := st.WriteSnapshot(c); err != nil {
		t.Fatal(err)
	}
	p, err := Follow(c, srv.connect(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.SnapshotSeq() == 0 {
		t.Fatal("the projection did not start from the snapshot")
	}
	if _, err := p.CurrentIdentity(time.Now(), cert); !errors.Is(err, ErrUserRemoved) {
		t.Fatalf("after a restart from a snapshot: %v", err)
	}
}
