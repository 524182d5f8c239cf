package state

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/schemas"
)

var admin = Actor{User: "admin", Roles: []string{access.RoleEditor}}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func devRole(t testing.TB) access.Role {
	t.Helper()
	r, err := access.Parse([]byte("kind: role\nmetadata: {name: dev}\nspec:\n  allow:\n    db_labels: {env: dev}\n    db_users: [app]\n    db_names: ['*']\n"))
	if err != nil {
		t.Fatal(err)
	}
	return r[0]
}

func selfSignedPEM(t testing.TB) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
}

func TestUserCommandsValidate(t *testing.T) {
	srv := startServer(t, t.TempDir())
	st := srv.open(t)
	ctx := ctxT(t)

	if _, err := st.CreateUser(ctx, admin, NewUser{Name: "alice", Roles: []string{"nosuch"}}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "unknown role nosuch") {
		t.Fatalf("unknown role: %v", err)
	}
	if _, err := st.CreateUser(ctx, admin, NewUser{Name: "x", Roles: []string{"access", "access"}}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "listed twice") {
		t.Fatalf("duplicate role: %v", err)
	}
	if _, err := st.CreateUser(ctx, admin, NewUser{Name: "bad name"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := st.UpsertRole(ctx, admin, devRole(t)); err != nil {
		t.Fatal(err)
	}
	u, err := st.CreateUser(ctx, admin, NewUser{Name: "alice@example.com", Roles: []string{"access", "dev"},
		Traits: map[string][]string{"db_users": {"alice"}}, InviteHash: "h", InviteExpires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != "alice@example.com" || !slices.Equal(u.Roles, []string{"access", "dev"}) || u.CreatedBy != "admin" || !u.InvitePending(time.Now()) {
		t.Fatalf("created %+v", u)
	}
	if _, err := st.CreateUser(ctx, admin, NewUser{Name: "alice@example.com"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := st.UpdateUser(ctx, admin, "bob", func(*User) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update unknown: %v", err)
	}
	if _, err := st.UpdateUser(ctx, admin, "alice@example.com", func(u *User) error {
		u.Roles = append(u.Roles, "ghost")
		return nil
	}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("update to unknown role: %v", err)
	}
	seq := st.Seq()
	if _, err := st.UpdateUser(ctx, admin, "alice@example.com", func(u *User) error { return nil }); err != nil || st.Seq() != seq {
		t.Fatalf("no-op update wrote an event: %v, seq %d -> %d", err, seq, st.Seq())
	}
	until := time.Now().Add(time.Minute).UTC().Truncate(time.Second)
	u, err = st.UpdateUser(ctx, admin, "alice@example.com", func(u *User) error {
		u.LockedUntil, u.LockReason = until, "5 failed logins"
		return nil
	})
	if err != nil || !u.LockedOut(time.Now()) || u.LockReason != "5 failed logins" {
		t.Fatalf("lock out: %v %+v", err, u)
	}
	if err := st.DeleteRole(ctx, admin, "dev"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "alice@example.com") {
		t.Fatalf("delete role in use: %v", err)
	}
	if _, err := st.UpsertRole(ctx, admin, access.Role{Kind: "role", Metadata: access.Metadata{Name: "access"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("replace built-in: %v", err)
	}
	if err := st.DeleteUser(ctx, admin, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, ok := st.User("alice@example.com"); ok {
		t.Fatal("deleted user still there")
	}
	if err := st.DeleteRole(ctx, admin, "dev"); err != nil {
		t.Fatalf("delete unused role: %v", err)
	}
	// A name can be reused after delete: the create expects the subject's
	// last sequence (the delete), not an empty subject.
	if _, err := st.CreateUser(ctx, admin, NewUser{Name: "alice@example.com", Roles: []string{"access"}}); err != nil {
		t.Fatalf("recreate: %v", err)
	}
}

func TestRoleUpsert(t *testing.T) {
	srv := startServer(t, t.TempDir())
	st := srv.open(t)
	ctx := ctxT(t)
	r := devRole(t)
	created, err := st.UpsertRole(ctx, admin, r)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	seq := st.Seq()
	if created, err := st.UpsertRole(ctx, admin, r); err != nil || created || st.Seq() != seq {
		t.Fatalf("same role again: created=%v err=%v seq %d -> %d", created, err, seq, st.Seq())
	}
	r.Spec.Deny.DBUsers = []string{"root"}
	if created, err := st.UpsertRole(ctx, admin, r); err != nil || created {
		t.Fatalf("update: %v %v", created, err)
	}
	got, ok := st.Role("dev")
	if !ok || !reflect.DeepEqual(got, r) {
		t.Fatalf("stored %+v", got)
	}
	// Readers get copies.
	got.Spec.Deny.DBUsers[0] = "changed"
	if again, _ := st.Role("dev"); again.Spec.Deny.DBUsers[0] != "root" {
		t.Fatal("reader changed the projection")
	}
	bad := devRole(t)
	bad.Spec.Allow.DBUsers = []string{"^(x$"}
	if _, err := st.UpsertRole(ctx, admin, bad); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "db_users[0]") {
		t.Fatalf("invalid role: %v", err)
	}
	if n := len(st.Roles()); n != 5 {
		t.Fatalf("%d roles, want 4 built-in + dev", n)
	}
}

func TestTokens(t *testing.T) {
	srv := startServer(t, t.TempDir())
	st := srv.open(t)
	ctx := ctxT(t)
	id := TokenID("s3cret-join-token")
	if _, err := st.CreateToken(ctx, admin, NewToken{ID: "s3cret", Type: TokenDB, Expires: time.Now().Add(time.Hour)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("raw secret as id: %v", err)
	}
	if _, err := st.CreateToken(ctx, admin, NewToken{ID: id, Type: TokenDB, Expires: time.Now().Add(time.Hour), SingleUse: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateToken(ctx, admin, NewToken{ID: id, Type: TokenDB, Expires: time.Now().Add(time.Hour)}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	tok, err := st.UseToken(ctx, Actor{}, id, "host-1", TokenDB)
	if err != nil || tok.Uses != 1 || tok.LastUsedBy != "host-1" {
		t.Fatalf("first use: %v %+v", err, tok)
	}
	_, err = st.UseToken(ctx, Actor{}, id, "host-2", TokenDB)
	var ref *TokenRefusal
	if !errors.As(err, &ref) || !strings.Contains(err.Error(), "already used by host-1") {
		t.Fatalf("reuse: %v", err)
	}
	if ref.Event.Code != "TGTK002W" || ref.Event.Success || ref.Event.HostID != "host-2" || ref.Event.ID == "" {
		t.Fatalf("refusal event %+v", ref.Event)
	}
	if _, err := st.UseToken(ctx, Actor{}, TokenID("other"), "host-3", TokenDB); !errors.As(err, &ref) || ref.Reason != "unknown token" {
		t.Fatalf("unknown token: %v", err)
	}
	if _, err := st.UseToken(ctx, Actor{}, "s3cret-join-token", "host-3", TokenDB); !errors.As(err, &ref) || !strings.Contains(ref.Reason, "malformed") {
		t.Fatalf("raw secret presented as id: %v", err)
	}
	// A proxy token joins no agent, and a refusal leaves it usable.
	pid := TokenID("proxy-join-token")
	if _, err := st.CreateToken(ctx, admin, NewToken{ID: pid, Type: TokenProxy, Expires: time.Now().Add(time.Hour), SingleUse: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UseToken(ctx, Actor{}, pid, "host-4", TokenDB); !errors.As(err, &ref) || !strings.Contains(ref.Reason, "type proxy cannot join a host of type db") {
		t.Fatalf("proxy token used by an agent: %v", err)
	}
	if tok, err := st.UseToken(ctx, Actor{}, pid, "proxy", TokenProxy); err != nil || tok.Uses != 1 {
		t.Fatalf("proxy token used by a proxy: %v %+v", err, tok)
	}
	if _, err := st.CreateToken(ctx, admin, NewToken{ID: TokenID("x"), Type: "nodes", Expires: time.Now().Add(time.Hour)}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"nodes"`) {
		t.Fatalf("unknown token type: %v", err)
	}
	if tok, _ := st.Token(id); tok.Uses != 1 {
		t.Fatalf("refused use changed the token: %+v", tok)
	}
	past := Token{Expires: time.Now().Add(-time.Second)}
	if r := past.Usable(time.Now()); !strings.HasPrefix(r, "expired at") {
		t.Fatalf("expired token usable: %q", r)
	}
}

// Two stores racing for one single-use token: exactly one wins.
func TestSingleUseTokenRace(t *testing.T) {
	srv := startServer(t, t.TempDir())
	a, b := srv.open(t), srv.open(t)
	ctx := ctxT(t)
	id := TokenID("race")
	if _, err := a.CreateToken(ctx, admin, NewToken{ID: id, Type: TokenDB, Expires: time.Now().Add(time.Hour), SingleUse: true}); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor(ctx, a.Seq()); err != nil {
		t.Fatal(err)
	}
	// b validates against a token nobody used yet; a uses it before b
	// appends, so b's append conflicts, b catches up and is refused.
	b.beforeAppend = func(attempt int) {
		if attempt == 0 {
			if _, err := a.UseToken(ctx, Actor{}, id, "host-a", TokenDB); err != nil {
				t.Error(err)
			}
		}
	}
	_, err := b.UseToken(ctx, Actor{}, id, "host-b", TokenDB)
	var ref *TokenRefusal
	if !errors.As(err, &ref) {
		t.Fatalf("second use: %v", err)
	}
	if tok, _ := b.Token(id); tok.Uses != 1 || tok.LastUsedBy != "host-a" {
		t.Fatalf("token %+v", tok)
	}
}

// A lost race is retried against the new state: both changes survive.
func TestLostRaceRetries(t *testing.T) {
	srv := startServer(t, t.TempDir())
	a, b := srv.open(t), srv.open(t)
	ctx := ctxT(t)
	if _, err := a.CreateUser(ctx, admin, NewUser{Name: "carol", Roles: []string{"access"}}); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor(ctx, a.Seq()); err != nil {
		t.Fatal(err)
	}
	calls := 0
	b.beforeAppend = func(attempt int) {
		if attempt == 0 {
			if _, err := a.UpdateUser(ctx, admin, "carol", func(u *User) error {
				u.Roles = append(u.Roles, access.RoleRequester)
				return nil
			}); err != nil {
				t.Error(err)
			}
		}
	}
	u, err := b.UpdateUser(ctx, admin, "carol", func(u *User) error {
		calls++
		u.Roles = append(u.Roles, access.RoleReviewer)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Fatalf("mutation ran %d times, want 2 (once per attempt)", calls)
	}
	want := []string{"access", "requester", "reviewer"}
	if !slices.Equal(u.Roles, want) {
		t.Fatalf("roles %v, want %v", u.Roles, want)
	}
	if err := a.WaitFor(ctx, b.Seq()); err != nil {
		t.Fatal(err)
	}
	if ua, _ := a.User("carol"); !slices.Equal(ua.Roles, want) {
		t.Fatalf("other store sees %v", ua.Roles)
	}
}

// Many concurrent updates from two stores: every update that reported
// success is in the final state, and no other.
func TestConcurrentUpdatesNoLostUpdate(t *testing.T) {
	srv := startServer(t, t.TempDir())
	stores := []*Store{srv.open(t), srv.open(t)}
	ctx := ctxT(t)
	if _, err := stores[0].CreateUser(ctx, admin, NewUser{Name: "dave"}); err != nil {
		t.Fatal(err)
	}
	const each = 25
	var mu sync.Mutex
	var applied []string
	conflicts := 0
	var wg sync.WaitGroup
	for si, st := range stores {
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := st.WaitFor(ctx, 1); err != nil {
					t.Error(err)
					return
				}
				for i := 0; i < each; i++ {
					tag := fmt.Sprintf("s%d-w%d-%d", si, w, i)
					_, err := st.UpdateUser(ctx, admin, "dave", func(u *User) error {
						if u.Traits == nil {
							u.Traits = map[string][]string{}
						}
						u.Traits["tags"] = append(u.Traits["tags"], tag)
						return nil
					})
					mu.Lock()
					switch {
					case err == nil:
						applied = append(applied, tag)
					case errors.Is(err, ErrConflict):
						conflicts++
					default:
						t.Error(err)
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	for _, st := range stores {
		if err := st.WaitFor(ctx, stores[0].Seq()); err != nil {
			t.Fatal(err)
		}
		if err := st.WaitFor(ctx, stores[1].Seq()); err != nil {
			t.Fatal(err)
		}
	}
	u0, _ := stores[0].User("dave")
	u1, _ := stores[1].User("dave")
	got := slices.Sorted(slices.Values(u0.Traits["tags"]))
	slices.Sort(applied)
	if !slices.Equal(got, applied) {
		t.Fatalf("final tags (%d) differ from successful updates (%d)\n got  %v\n want %v", len(got), len(applied), got, applied)
	}
	if !reflect.DeepEqual(u0, u1) {
		t.Fatalf("stores disagree:\n%+v\n%+v", u0, u1)
	}
	if len(applied)+conflicts != 4*each {
		t.Fatalf("%d applied + %d conflicts != %d", len(applied), conflicts, 4*each)
	}
	t.Logf("%d applied, %d gave up after %d attempts, %d lost races retried", len(applied), conflicts, maxAttempts,
		stores[0].Conflicts()+stores[1].Conflicts())
}

// populate makes one change of every kind.
func populate(t *testing.T, st *Store) {
	t.Helper()
	ctx := ctxT(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := st.UpsertRole(ctx, admin, devRole(t))
	must(err)
	_, err = st.CreateUser(ctx, admin, NewUser{Name: "alice", Roles: []string{"access", "dev"},
		Traits: map[string][]string{"db_users": {"alice", "*"}, "db_names": {"app"}}})
	must(err)
	_, err = st.CreateUser(ctx, admin, NewUser{Name: "bob", Roles: []string{"requester"}})
	must(err)
	must(st.SetPassword(ctx, Actor{User: "bob"}, "bob", "$argon2id$fake", true))
	_, err = st.UpdateUser(ctx, admin, "alice", func(u *User) error { u.LockedUntil = time.Now().Add(time.Hour); return nil })
	must(err)
	_, err = st.CreateToken(ctx, admin, NewToken{ID: TokenID("t1"), Type: TokenDB, Expires: time.Now().Add(time.Hour)})
	must(err)
	_, err = st.UseToken(ctx, Actor{}, TokenID("t1"), "host-1", TokenDB)
	must(err)
	_, err = st.RegisterDatabase(ctx, Actor{User: "host-1"}, NewDatabase{Name: "pg1", Protocol: "postgres",
		URI: "127.0.0.1:5432", Labels: map[string]string{"env": "dev"}, HostID: "host-1"})
	must(err)
	_, err = st.RegisterDatabase(ctx, Actor{User: "host-1"}, NewDatabase{Name: "gone", Protocol: "mysql", URI: "x:3306", HostID: "host-1"})
	must(err)
	must(st.DeleteDatabase(ctx, admin, "gone"))
	cert, _ := selfSignedPEM(t)
	_, err = st.PublishCA(ctx, admin, "db-client", cert)
	must(err)
	req, err := st.CreateAccessRequest(ctx, Actor{User: "bob"}, NewAccessRequest{Requester: "bob", Roles: []string{"access"},
		Reason: "incident 42", Expires: time.Now().Add(time.Hour)})
	must(err)
	_, err = st.UpdateAccessRequest(ctx, admin, req.ID, RequestApproved, "ok")
	must(err)
	l, err := st.CreateLock(ctx, admin, NewLock{TargetUser: "mallory", Message: "left"})
	must(err)
	_, err = st.CreateLock(ctx, admin, NewLock{TargetRole: "dev", Expires: time.Now().Add(time.Hour)})
	must(err)
	must(st.DeleteLock(ctx, admin, l.ID))
}

// A restarted store replays STATE and the heartbeats into the same state.
func TestRestartReplaysSameState(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir)
	st := srv.open(t)
	populate(t, st)
	before := st.Snapshot()
	if len(before.Users) != 2 || len(before.Databases) != 1 || len(before.Locks) != 1 || len(before.CAs) != 1 ||
		len(before.Tokens) != 1 || len(before.AccessRequests) != 1 || len(before.Roles) != 1 {
		t.Fatalf("populate made %+v", before)
	}
	if before.Databases["pg1"].LastHeartbeat.IsZero() {
		t.Fatal("no heartbeat after registration")
	}
	st.Close()
	srv.stop()

	srv2 := startServer(t, dir)
	st2 := srv2.open(t)
	after := st2.Snapshot()
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("state after restart differs:\nbefore %+v\nafter  %+v", before, after)
	}
	if skipped, err := st2.Stats(); skipped != 0 {
		t.Fatalf("%d messages skipped on replay: %v", skipped, err)
	}
	// The replayed store accepts commands that depend on the replayed
	// per-subject sequences.
	if _, err := st2.UpdateUser(ctx(t), admin, "bob", func(u *User) error { u.Roles = []string{"access"}; return nil }); err != nil {
		t.Fatal(err)
	}
}

func ctx(t testing.TB) context.Context { return ctxT(t) }

func TestSecondStoreFollows(t *testing.T) {
	srv := startServer(t, t.TempDir())
	a := srv.open(t)
	c := ctxT(t)
	var mu sync.Mutex
	var liveLocks []string
	agent, err := Follow(c, srv.connect(t), OnApply(func(ev events.Event, live bool) {
		if l, ok := ev.(*events.LockCreate); ok && live {
			mu.Lock()
			liveLocks = append(liveLocks, l.TargetUser+l.TargetRole)
			mu.Unlock()
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	b := srv.open(t)
	populate(t, a)
	if err := b.WaitFor(c, a.Seq()); err != nil {
		t.Fatal(err)
	}
	if err := agent.WaitFor(c, a.Seq()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.Snapshot(), b.Snapshot()) || !reflect.DeepEqual(a.Snapshot(), agent.Snapshot()) {
		t.Fatal("followers differ from the writer")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(liveLocks, []string{"mallory", "dev"}) {
		t.Fatalf("live lock notifications %v", liveLocks)
	}
	now := time.Now()
	if _, ok := agent.LockedOut(now, "mallory", nil, ""); ok {
		t.Fatal("deleted lock still locks")
	}
	if l, ok := agent.LockedOut(now, "alice", []string{"access", "dev"}, ""); !ok || l.TargetRole != "dev" {
		t.Fatalf("role lock not found: %+v %v", l, ok)
	}
}

// Secrets never reach the STATE stream, which exporters read; the broker
// reads them back from CREDENTIALS.
func TestSecretsStayOutOfState(t *testing.T) {
	srv := startServer(t, t.TempDir())
	st := srv.open(t)
	c := ctxT(t)
	const pw, invite, token = "$argon2id$v=19$SECRET-PASSWORD-HASH", "SECRET-INVITE-HASH", "SECRET-JOIN-TOKEN"
	if _, err := st.CreateUser(c, admin, NewUser{Name: "erin", Roles: []string{"access"}, InviteHash: invite, InviteExpires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	cr, err := st.Credentials(c, "erin")
	if err != nil || cr.InviteHash != invite || cr.PasswordHash != "" {
		t.Fatalf("credentials after create: %+v %v", cr, err)
	}
	if err := st.SetPassword(c, Actor{User: "erin"}, "erin", pw, true); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateToken(c, admin, NewToken{ID: TokenID(token), Type: TokenDB, Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	cr, err = st.Credentials(c, "erin")
	if err != nil || cr.PasswordHash != pw || cr.InviteHash != "" {
		t.Fatalf("credentials after password: %+v %v", cr, err)
	}
	if u, _ := st.User("erin"); !u.PasswordSet || u.InvitePending(time.Now()) {
		t.Fatalf("user after password %+v", u)
	}
	stream, err := st.js.Stream(c, events.StateStream)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for seq := uint64(1); seq <= st.Seq(); seq++ {
		m, err := stream.GetMsg(c, seq)
		if err != nil {
			t.Fatal(err)
		}
		n++
		for _, secret := range []string{pw, invite, token} {
			if strings.Contains(string(m.Data), secret) {
				t.Fatalf("secret %q in %s: %s", secret, m.Subject, m.Data)
			}
		}
	}
	if n != 3 {
		t.Fatalf("%d STATE messages, want 3", n)
	}
	if err := st.DeleteUser(c, admin, "erin"); err != nil {
		t.Fatal(err)
	}
	kv, err := st.js.KeyValue(c, CredentialsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(c, "erin"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("credentials outlived the user: %v", err)
	}
}

func TestDatabasesAndHeartbeats(t *testing.T) {
	srv := startServer(t, t.TempDir())
	st := srv.open(t)
	c := ctxT(t)
	host := Actor{User: "host-1"}
	nd := NewDatabase{Name: "pg1", Protocol: "postgres", URI: "127.0.0.1:5432", Labels: map[string]string{"env": "dev"},
		HostID: "host-1", HeartbeatTTL: time.Minute}
	d, err := st.RegisterDatabase(c, host, nd)
	if err != nil {
		t.Fatal(err)
	}
	seq := st.Seq()
	d2, err := st.RegisterDatabase(c, host, nd)
	if err != nil || st.Seq() != seq {
		t.Fatalf("same registration wrote to STATE: %v, seq %d -> %d", err, seq, st.Seq())
	}
	if !d2.LastHeartbeat.After(d.LastHeartbeat) || d2.HeartbeatHost != "host-1" {
		t.Fatalf("re-registration did not beat: %v then %v", d.LastHeartbeat, d2.LastHeartbeat)
	}
	if err := st.Heartbeat(c, host, "pg1", "host-1"); err != nil {
		t.Fatal(err)
	}
	if st.Seq() != seq {
		t.Fatal("heartbeat written to STATE")
	}
	d3, _ := st.Database("pg1")
	if d3.Expired(d3.LastHeartbeat.Add(59*time.Second)) || !d3.Expired(d3.LastHeartbeat.Add(time.Minute)) {
		t.Fatalf("expiry around %v wrong", d3.Expires())
	}
	if len(st.LiveDatabases(d3.LastHeartbeat.Add(time.Second))) != 1 || len(st.LiveDatabases(d3.Expires())) != 0 {
		t.Fatal("live databases")
	}
	if ad := d3.AccessDatabase(); ad.Name != "pg1" || ad.IgnoreDBName || ad.Labels["env"] != "dev" {
		t.Fatalf("access view %+v", ad)
	}
	nd.Labels = map[string]string{"env": "prod"}
	if d4, err := st.RegisterDatabase(c, host, nd); err != nil || st.Seq() == seq || d4.Labels["env"] != "prod" {
		t.Fatalf("new labels: %v %+v", err, d4)
	}
	if err := st.Heartbeat(c, host, "nope", "h"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("heartbeat unknown db: %v", err)
	}
	for _, bad := range []NewDatabase{
		{Name: "a b", Protocol: "postgres", URI: "x", HostID: "h"},
		{Name: "a", Protocol: "oracle", URI: "x", HostID: "h"},
		{Name: "a", Protocol: "postgres", HostID: "h"},
		{Name: "a", Protocol: "postgres", URI: "x"},
	} {
		if _, err := st.RegisterDatabase(c, host, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

func TestCAsLocksRequests(t *testing.T) {
	srv := startServer(t, t.TempDir())
	st := srv.open(t)
	c := ctxT(t)
	cert, key := selfSignedPEM(t)
	if _, err := st.PublishCA(c, admin, "db", cert+key); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "only CERTIFICATE") {
		t.Fatalf("key published: %v", err)
	}
	if _, err := st.PublishCA(c, admin, "root", cert); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad type: %v", err)
	}
	ca, err := st.PublishCA(c, admin, "db", cert)
	if err != nil || len(ca.Fingerprints) != 1 || len(ca.Fingerprints[0]) != 64 {
		t.Fatalf("publish: %v %+v", err, ca)
	}
	if _, err := st.CreateLock(c, admin, NewLock{TargetUser: "a", TargetRole: "b"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("two targets: %v", err)
	}
	if err := st.DeleteLock(c, admin, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete unknown lock: %v", err)
	}
	l, err := st.CreateLock(c, admin, NewLock{TargetSession: "sid1", Expires: time.Now().Add(time.Hour)})
	if err != nil || !l.Matches(time.Now(), "x", nil, "sid1") || l.Matches(time.Now(), "x", nil, "sid2") || l.Matches(l.Expires, "x", nil, "sid1") {
		t.Fatalf("session lock %+v %v", l, err)
	}
	if _, err := st.CreateAccessRequest(c, admin, NewAccessRequest{Requester: "ghost", Roles: []string{"access"}, Expires: time.Now().Add(time.Hour)}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown requester: %v", err)
	}
	if _, err := st.CreateUser(c, admin, NewUser{Name: "fay"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateAccessRequest(c, admin, NewAccessRequest{Requester: "fay", Roles: []string{"nope"}, Expires: time.Now().Add(time.Hour)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown role: %v", err)
	}
	r, err := st.CreateAccessRequest(c, Actor{User: "fay"}, NewAccessRequest{Requester: "fay", Roles: []string{"access"}, Expires: time.Now().Add(time.Hour)})
	if err != nil || r.State != RequestPending {
		t.Fatalf("create request: %v %+v", err, r)
	}
	r, err = st.UpdateAccessRequest(c, admin, r.ID, RequestDenied, "no")
	if err != nil || r.State != RequestDenied || r.UpdatedBy != "admin" || r.UpdateReason != "no" {
		t.Fatalf("deny: %v %+v", err, r)
	}
	if _, err := st.UpdateAccessRequest(c, admin, r.ID, RequestApproved, ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("approve after deny: %v", err)
	}
}

func TestDecode(t *testing.T) {
	ev := &events.UserCreate{Name: "a", UserRoles: []string{"x"}}
	if err := events.Stamp(ev, "c"); err != nil {
		t.Fatal(err)
	}
	b := []byte(fmt.Sprintf(`{"name":"a","user_roles":["x"],"id":%q,"time":"2024-01-01T00:00:00Z","cluster":"c","code":"TGUS001I","type":"user.create"}`, ev.ID))
	got, err := decode(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if uc, ok := got.(*events.UserCreate); !ok || uc.Name != "a" {
		t.Fatalf("reordered fields decoded to %#v", got)
	}
	if got, err := decode([]byte(`{"id":"1","type":"user.fly"}`), nil); got != nil || err != nil {
		t.Fatalf("unknown type: %v %v", got, err)
	}
	if _, err := decode([]byte(`not json`), nil); err == nil {
		t.Fatal("garbage decoded")
	}
	if k := escapeKey("alice@example.com"); k != "alice=40example=2Ecom" {
		t.Fatalf("escape %q", k)
	}
	if k := escapeKey("a-b_C9"); k != "a-b_C9" {
		t.Fatalf("escape %q", k)
	}
}

// Every type the projection applies is registered with the Go type the
// projection decodes it into.
func TestStateTypesRegistered(t *testing.T) {
	for _, typ := range []string{"user.create", "user.update", "user.delete", "user.password_set", "role.create", "role.update",
		"role.delete", "token.create", "token.use", "db.create", "db.delete", "ca.publish", "access_request.create",
		"access_request.update", "lock.create", "lock.delete"} {
		spec, ok := events.Lookup(typ)
		if !ok {
			t.Errorf("%s not registered", typ)
			continue
		}
		if reflect.TypeOf(spec.New()) != reflect.TypeOf(newEvent(typ)) {
			t.Errorf("%s: registry has %T, projection decodes %T", typ, spec.New(), newEvent(typ))
		}
	}
}

// Every event the store writes, to STATE or to DB_HEARTBEATS, and the
// refusal events it hands back, match their checked-in JSON Schema.
func TestEventsMatchSchemas(t *testing.T) {
	srv := startServer(t, t.TempDir())
	st := srv.open(t)
	populate(t, st)
	c := ctxT(t)
	r := devRole(t)
	r.Spec.Deny.DBNames = []string{"secret"}
	tmp := devRole(t)
	tmp.Metadata.Name = "tmp"
	for _, err := range []error{
		func() error { _, err := st.UpsertRole(c, admin, r); return err }(),
		func() error { _, err := st.UpsertRole(c, admin, tmp); return err }(),
		st.DeleteRole(c, admin, "tmp"),
		st.DeleteUser(c, admin, "bob"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	stream, err := st.js.Stream(c, events.StateStream)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]bool{}
	for seq := uint64(1); seq <= st.Seq(); seq++ {
		m, err := stream.GetMsg(c, seq)
		if err != nil {
			t.Fatal(err)
		}
		if err := schemas.Validate(m.Data); err != nil {
			t.Errorf("%s: %v\n%s", m.Subject, err, m.Data)
		}
		typ, _ := typeOf(m.Data)
		types[typ] = true
	}
	if len(types) != 16 {
		t.Errorf("populate wrote only %d types: %v", len(types), types)
	}
	kv, err := st.js.KeyValue(c, HeartbeatsBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(c, "pg1")
	if err != nil {
		t.Fatal(err)
	}
	if err := schemas.Validate(e.Value()); err != nil {
		t.Errorf("heartbeat: %v\n%s", err, e.Value())
	}
	_, err = st.UseToken(c, Actor{}, TokenID("nope"), "h", TokenDB)
	var ref *TokenRefusal
	if !errors.As(err, &ref) {
		t.Fatal(err)
	}
	if err := schemas.ValidateEvent(ref.Event); err != nil {
		t.Error(err)
	}
}

func TestStreamSeq(t *testing.T) {
	for reply, want := range map[string]uint64{
		"$JS.ACK.STATE.cons.1.42.7.1700000000000000000.0":                      42,
		"$JS.ACK.hub.ACCHASH.STATE.cons.1.4242.7.1700000000000000000.0.rand":   4242,
		"$JS.ACK.hub.ACCHASH.STATE.cons.1.99.7.1700000000000000000.0":          99,
		"$JS.ACK.STATE.cons.1.x.7.1700000000000000000.0":                       0,
		"$JS.ACK.STATE.cons.1.5.7":                                             0,
		"_INBOX.abc":                                                           0,
		"$JS.ACK.hub.ACCHASH.STATE.cons.1.0.7.1700000000000000000.0.rand.more": 0,
	} {
		got, ok := streamSeq(reply)
		if got != want || ok != (want != 0) {
			t.Errorf("%s: %d %v, want %d", reply, got, ok, want)
		}
	}
}

// The server's ack subjects are in a form streamSeq reads, so replay takes
// the allocation-free path.
func TestStreamSeqOfServer(t *testing.T) {
	srv := startServer(t, t.TempDir())
	st := srv.open(t)
	c := ctxT(t)
	populate(t, st)
	cons, err := st.stream.OrderedConsumer(c, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(5)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := streamSeq(m.Reply()); !ok || got != meta.Sequence.Stream {
			t.Errorf("%s: %d %v, want %d", m.Reply(), got, ok, meta.Sequence.Stream)
		}
		n++
	}
	if n != 5 {
		t.Fatalf("%d messages", n)
	}
}
