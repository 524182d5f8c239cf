package daemon_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

const goodPassword = "correct horse battery staple"

var admin = state.Actor{User: "admin", Roles: []string{access.RoleEditor}}

// addUser creates a user through the admin operations and returns the
// invite.
func (b *testBroker) addUser(tb testing.TB, name string, roles ...string) string {
	tb.Helper()
	res, err := b.Admin.As(admin, "").AddUser(ctxT(tb), api.AddUserRequest{Name: name, Roles: roles, DBUsers: []string{"*"}, DBNames: []string{"*"}})
	if err != nil {
		tb.Fatal(err)
	}
	return res.Invite
}

// login logs in over the API and returns a TLS certificate for mTLS.
func (b *testBroker) login(tb testing.TB, c *api.Client, user, pw, invite string) (*tls.Certificate, *api.Certificate, error) {
	tb.Helper()
	k := newKey(tb)
	res, err := c.Login(ctxT(tb), api.LoginRequest{User: user, Password: pw, Invite: invite, PublicKey: pubPEM(tb, k)})
	if err != nil {
		return nil, nil, err
	}
	blk, _ := pem.Decode([]byte(res.CertPEM))
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: k, Leaf: leaf}, res, nil
}

func statusOf(err error) int {
	var se *api.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

func TestLoginInviteAndPassword(t *testing.T) {
	b := startBroker(t, login.Options{})
	c := b.client(t, nil)
	invite := b.addUser(t, "alice", "access")

	// No password yet: the invite is needed; the client is not told why.
	_, _, err := b.login(t, c, "alice", goodPassword, "")
	if statusOf(err) != http.StatusUnauthorized || err.Error() != "login failed: wrong user name or password" {
		t.Fatalf("login before the invite: %v", err)
	}
	if e := b.lastAudit(t, "user.login"); e.str("reason") != events.LoginNoPassword || e.m["success"] != false || e.str("code") != "TGAU001W" {
		t.Fatalf("audit: %s", e.raw)
	}
	// A short password is refused and the invite stays usable.
	if _, _, err := b.login(t, c, "alice", "short", invite); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "at least 15") {
		t.Fatalf("weak password: %v", err)
	}
	if e := b.lastAudit(t, "user.login"); e.str("reason") != events.LoginWeakPassword {
		t.Fatalf("audit: %s", e.raw)
	}
	// A wrong invite is refused.
	if _, _, err := b.login(t, c, "alice", goodPassword, invite+"x"); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("wrong invite: %v", err)
	}
	if e := b.lastAudit(t, "user.login"); e.str("reason") != events.LoginInviteInvalid {
		t.Fatalf("audit: %s", e.raw)
	}

	cert, res, err := b.login(t, c, "alice", goodPassword, invite)
	if err != nil {
		t.Fatal(err)
	}
	id := res.Identity
	if id.User != "alice" || !slices.Equal(id.Roles, []string{"access"}) || !slices.Equal(id.Traits[identity.TraitDBUsers], []string{"*"}) {
		t.Fatalf("identity %+v", id)
	}
	if d := time.Until(cert.Leaf.NotAfter); d > ca.DefaultUserTTL || d < ca.DefaultUserTTL-time.Minute {
		t.Fatalf("certificate lasts %s", d)
	}
	if e := b.lastAudit(t, "user.login"); e.m["success"] != true || e.str("method") != events.LoginInvite || e.str("code") != "TGAU001I" || e.str("user") != "alice" {
		t.Fatalf("audit: %s", e.raw)
	}
	ci := b.lastAudit(t, "cert.issue")
	if ci.str("subject") != "alice" || ci.str("purpose") != events.IssueLogin || ci.str("serial") != cert.Leaf.SerialNumber.Text(16) || ci.str("ca_type") != "user" {
		t.Fatalf("cert.issue: %s", ci.raw)
	}
	if u, _ := b.Store.User("alice"); !u.PasswordSet {
		t.Fatalf("password not recorded: %+v", u)
	}

	// The invite is single-use.
	if _, _, err := b.login(t, c, "alice", goodPassword+"!", invite); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("reused invite: %v", err)
	}
	if e := b.lastAudit(t, "user.login"); e.str("reason") != events.LoginInviteUsed {
		t.Fatalf("audit: %s", e.raw)
	}
	// The password works; a wrong one and an unknown user get the same
	// answer, and the audit trail tells them apart.
	if _, _, err := b.login(t, c, "alice", goodPassword, ""); err != nil {
		t.Fatal(err)
	}
	_, _, errWrong := b.login(t, c, "alice", goodPassword+"?", "")
	if e := b.lastAudit(t, "user.login"); e.str("reason") != events.LoginWrongPassword || e.str("user") != "alice" {
		t.Fatalf("audit: %s", e.raw)
	}
	_, _, errUnknown := b.login(t, c, "mallory", goodPassword, "")
	if e := b.lastAudit(t, "user.login"); e.str("reason") != events.LoginUnknownUser || e.str("user") != "mallory" {
		t.Fatalf("audit: %s", e.raw)
	}
	if errWrong == nil || errUnknown == nil || errWrong.Error() != errUnknown.Error() || statusOf(errWrong) != statusOf(errUnknown) {
		t.Fatalf("wrong password %v, unknown user %v: the client must not tell them apart", errWrong, errUnknown)
	}

	// mTLS: whoami, then reissue with the roles the user has now.
	mc := b.client(t, cert)
	who, err := mc.Whoami(ctxT(t))
	if err != nil || who.Identity.User != "alice" {
		t.Fatalf("whoami: %+v %v", who, err)
	}
	if _, err := b.Store.UpdateUser(ctxT(t), admin, "alice", func(u *state.User) error {
		u.Roles = append(u.Roles, access.RoleRequester)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	k := newKey(t)
	re, err := mc.Reissue(ctxT(t), api.ReissueRequest{PublicKey: pubPEM(t, k), TTL: api.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(re.Identity.Roles, []string{"access", "requester"}) || time.Until(re.Identity.Expires) > time.Hour {
		t.Fatalf("reissued %+v", re.Identity)
	}
	if e := b.lastAudit(t, "cert.issue"); e.str("purpose") != events.IssueReissue {
		t.Fatalf("audit: %s", e.raw)
	}
	// A removed user cannot renew: the certificate is refused outright.
	if err := b.Admin.As(admin, "").RemoveUser(ctxT(t), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.Reissue(ctxT(t), api.ReissueRequest{PublicKey: pubPEM(t, k)}); statusOf(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "user alice no longer exists") {
		t.Fatalf("reissue of a removed user: %v", err)
	}

	// No secret reached a stream: not the password, the invite or a hash.
	b.noSecrets(t, goodPassword, invite, login.InviteHash(invite), "$argon2id$")
}

// noSecrets scans every message of AUDIT and STATE for the given strings.
func (b *testBroker) noSecrets(t *testing.T, secrets ...string) {
	t.Helper()
	ctx := ctxT(t)
	for _, name := range []string{events.AuditStream, events.StateStream} {
		s, err := b.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := s.Info(ctx)
		n := 0
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			n++
			for _, sec := range secrets {
				if bytes.Contains(m.Data, []byte(sec)) {
					t.Errorf("%s sequence %d (%s) contains a secret %q", name, seq, m.Subject, sec)
				}
			}
		}
		if n == 0 {
			t.Errorf("stream %s is empty", name)
		}
	}
}

func TestCertificateRefusals(t *testing.T) {
	b := startBroker(t, login.Options{})
	invite := b.addUser(t, "alice", "access")
	good, _, err := b.login(t, b.client(t, nil), "alice", goodPassword, invite)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.client(t, good).MyDatabases(ctxT(t)); err != nil {
		t.Fatalf("valid certificate refused: %v", err)
	}

	// Expired: signed by the real user CA, but over.
	userCA, userKey := loadCA(t, b.cfg.DataDir, "user")
	k := newKey(t)
	ext, err := identity.Extension(identity.Identity{User: "alice", Roles: []string{"access"}})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{ext}}
	der, err := x509.CreateCertificate(nil, tmpl, userCA, k.Public(), userKey)
	if err != nil {
		t.Fatal(err)
	}
	expired := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}

	// Another cluster's user CA.
	other, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ok := newKey(t)
	oc, _, err := other.IssueUser(ok.Public(), identity.Identity{User: "alice", Roles: []string{"editor"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign := &tls.Certificate{Certificate: [][]byte{oc.Raw}, PrivateKey: ok}

	// Tampered: the real certificate with its roles rewritten in place.
	raw := bytes.Clone(good.Certificate[0])
	i := bytes.Index(raw, []byte(`"roles":["access"]`))
	if i < 0 {
		t.Fatal("roles not found in the certificate")
	}
	copy(raw[i:], `"roles":["editor"]`)
	tampered := &tls.Certificate{Certificate: [][]byte{raw}, PrivateKey: good.PrivateKey}

	for _, tc := range []struct {
		name   string
		cert   *tls.Certificate
		want   string
		reason string
	}{
		{"expired", expired, "expired at", events.LoginCertExpired},
		{"other CA", foreign, "not by this cluster's Tollgate user CA", events.LoginCertUntrusted},
		{"tampered", tampered, "the certificate was altered", events.LoginCertAltered},
		{"none", nil, "needs a user certificate", events.LoginNoCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.client(t, tc.cert).MyDatabases(ctxT(t))
			if statusOf(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want 401 %q", err, tc.want)
			}
			e := b.lastAudit(t, "user.login")
			if e.str("reason") != tc.reason || e.str("method") != events.LoginCertificate || e.m["success"] != false || e.str("path") != "GET /v1/databases" {
				t.Fatalf("audit: %s", e.raw)
			}
		})
	}
	// A tampered certificate that claims editor gets no admin operation.
	if _, err := b.client(t, tampered).Users(ctxT(t)); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("tampered editor: %v", err)
	}
}

func loadCA(t *testing.T, dataDir, typ string) (*x509.Certificate, any) {
	t.Helper()
	cb, err := os.ReadFile(filepath.Join(dataDir, "ca", typ+".crt"))
	if err != nil {
		t.Fatal(err)
	}
	kb, err := os.ReadFile(filepath.Join(dataDir, "ca", typ+".key"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(cb)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ = pem.Decode(kb)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func TestFailedLoginsRateLimited(t *testing.T) {
	b := startBroker(t, login.Options{})
	c := b.client(t, nil)
	if _, _, err := b.login(t, c, "carol", goodPassword, b.addUser(t, "carol", "access")); err != nil {
		t.Fatal(err)
	}
	for i := range login.DefaultLimit.Burst {
		if _, _, err := b.login(t, c, "carol", "not the password at all", ""); statusOf(err) != http.StatusUnauthorized {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	// Now even the right password is refused until the bucket refills.
	_, _, err := b.login(t, c, "carol", goodPassword, "")
	var se *api.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusTooManyRequests || !strings.Contains(se.Message, "too many failed logins, retry in ") || se.RetryAfter <= 0 {
		t.Fatalf("after %d failures: %v", login.DefaultLimit.Burst, err)
	}
	e := b.lastAudit(t, "user.login")
	if r := e.str("reason"); r != events.LoginRateLimited && r != events.LoginLocked {
		t.Fatalf("audit: %s", e.raw)
	}
	// The lock-out is in STATE, so every broker honours it.
	if u, _ := b.Store.User("carol"); !u.LockedOut(time.Now()) || !strings.Contains(u.LockReason, "failed logins") {
		t.Fatalf("carol not locked out in the state: %+v", u)
	}
	// The source is limited too: another user from the same address waits.
	if _, _, err := b.login(t, c, "dave", goodPassword, ""); statusOf(err) != http.StatusTooManyRequests {
		t.Fatalf("another user from the same source: %v", err)
	}
}

func TestJoinTokenSingleUse(t *testing.T) {
	b := startBroker(t, login.Options{})
	a := b.Admin.As(admin, "")
	tok, err := a.AddToken(ctxT(t), api.AddTokenRequest{Type: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Token.ID != state.TokenID(tok.Value) || !tok.Token.SingleUse {
		t.Fatalf("token %+v", tok.Token)
	}
	c := b.client(t, nil)
	k := newKey(t)
	res, err := c.Join(ctxT(t), api.JoinRequest{Token: tok.Value, HostID: "agent-1", Hosts: []string{"agent1.internal"}, PublicKey: pubPEM(t, k)})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(res.CertPEM))
	hc, _ := x509.ParseCertificate(blk.Bytes)
	if id, err := b.CAs.VerifyHost([]*x509.Certificate{hc}, x509.ExtKeyUsageServerAuth); err != nil || id != "agent-1" {
		t.Fatalf("host certificate: %q %v", id, err)
	}
	if e := b.lastAudit(t, "cert.issue"); e.str("purpose") != events.IssueJoin || e.str("ca_type") != "host" {
		t.Fatalf("audit: %s", e.raw)
	}
	_, err = c.Join(ctxT(t), api.JoinRequest{Token: tok.Value, HostID: "agent-2", PublicKey: pubPEM(t, k)})
	if statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "single-use token already used by agent-1") {
		t.Fatalf("reused token: %v", err)
	}
	e := b.lastAudit(t, "token.use")
	if e.m["success"] != false || e.str("code") != "TGTK002W" || e.str("host_id") != "agent-2" {
		t.Fatalf("audit: %s", e.raw)
	}
	if _, err := c.Join(ctxT(t), api.JoinRequest{Token: "made-up", HostID: "agent-3", PublicKey: pubPEM(t, k)}); statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "unknown token") {
		t.Fatalf("unknown token: %v", err)
	}
	b.noSecrets(t, tok.Value)
}

func TestDatabasesFilteredAndAdminAPI(t *testing.T) {
	b := startBroker(t, login.Options{})
	ctx := ctxT(t)
	local := b.Admin.As(admin, "")
	res, err := local.UpsertRoles(ctx, "kind: role\nmetadata: {name: dev}\nspec:\n  allow:\n    db_labels: {env: dev}\n    db_users: [app]\n    db_names: ['*']\n")
	if err != nil || len(res) != 1 || res[0].Result != "created" {
		t.Fatalf("roles: %+v %v", res, err)
	}
	for _, d := range []state.NewDatabase{
		{Name: "pg-dev", Protocol: "postgres", URI: "127.0.0.1:5432", Labels: map[string]string{"env": "dev"}, HostID: "agent-1"},
		{Name: "pg-prod", Protocol: "postgres", URI: "10.0.0.1:5432", Labels: map[string]string{"env": "prod"}, HostID: "agent-1"},
	} {
		if _, err := b.Store.RegisterDatabase(ctx, admin, d); err != nil {
			t.Fatal(err)
		}
	}
	c := b.client(t, nil)
	names := func(cert *tls.Certificate) []string {
		dbs, err := b.client(t, cert).MyDatabases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, d := range dbs {
			n = append(n, d.Name)
		}
		return n
	}
	alice, _, err := b.login(t, c, "alice", goodPassword, b.addUser(t, "alice", "access"))
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := b.login(t, c, "bob", goodPassword, b.addUser(t, "bob", "dev"))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(alice); !slices.Equal(got, []string{"pg-dev", "pg-prod"}) {
		t.Fatalf("alice (access) sees %v", got)
	}
	if got := names(bob); !slices.Equal(got, []string{"pg-dev"}) {
		t.Fatalf("bob (dev) sees %v", got)
	}

	// Admin operations need the editor role.
	if _, err := b.client(t, alice).Users(ctx); statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "needs the editor role") {
		t.Fatalf("alice listing users: %v", err)
	}
	k := newKey(t)
	sig, err := local.SignIdentity(ctx, api.SignIdentityRequest{User: "ops-bot", Roles: []string{"editor"}, PublicKey: pubPEM(t, k), TTL: api.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(sig.CertPEM))
	leaf, _ := x509.ParseCertificate(blk.Bytes)
	remote := b.client(t, &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: k})
	add, err := remote.AddUser(ctx, api.AddUserRequest{Name: "erin", Roles: []string{"access"}, DBUsers: []string{"erin"}})
	if err != nil {
		t.Fatal(err)
	}
	wantCmd := "tg login --proxy=" + b.ProxyAddr + " --user=erin --invite=" + add.Invite + " --ca-pin=" + add.HostCAPin
	if add.LoginCommand != wantCmd || !strings.HasPrefix(add.HostCAPin, "sha256:") {
		t.Fatalf("login command %q, want %q", add.LoginCommand, wantCmd)
	}
	if _, err := remote.AddUser(ctx, api.AddUserRequest{Name: "erin", Roles: []string{"access"}}); statusOf(err) != http.StatusConflict {
		t.Fatalf("duplicate user: %v", err)
	}
	if _, err := remote.AddUser(ctx, api.AddUserRequest{Name: "frank", Roles: []string{"nosuch"}}); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "unknown role nosuch") {
		t.Fatalf("unknown role: %v", err)
	}
	us, err := remote.Users(ctx)
	if err != nil || len(us) != 3 {
		t.Fatalf("users: %+v %v", us, err)
	}
	if _, err := remote.UpsertRoles(ctx, "kind: role\nmetadata: {name: x}\nspec:\n  allow:\n    db_lables: {}\n"); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "db_lables") {
		t.Fatalf("misspelt role key: %v", err)
	}
	rs, err := remote.Roles(ctx)
	if err != nil || len(rs) != 5 {
		t.Fatalf("roles: %d %v", len(rs), err)
	}
	all, err := remote.Databases(ctx)
	if err != nil || len(all) != 2 || !all[0].Live {
		t.Fatalf("databases: %+v %v", all, err)
	}
	dbc, err := remote.SignDB(ctx, api.SignDBRequest{Hosts: []string{"db.internal"}})
	if err != nil || !strings.Contains(dbc.KeyPEM, "PRIVATE KEY") {
		t.Fatalf("sign db: %v", err)
	}
	if e := b.lastAudit(t, "cert.issue"); e.str("ca_type") != "db" || e.str("user") != "ops-bot" {
		t.Fatalf("audit: %s", e.raw)
	}
	if err := remote.RemoveUser(ctx, "erin"); err != nil {
		t.Fatal(err)
	}
	if err := remote.RemoveUser(ctx, "erin"); statusOf(err) != http.StatusNotFound {
		t.Fatalf("removing twice: %v", err)
	}
}

func TestAttach(t *testing.T) {
	b := startBroker(t, login.Options{})
	ctx := ctxT(t)

	// A running broker: reached at its NATS listen address.
	l, err := daemon.Attach(ctx, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(l.Via, "running daemon") {
		t.Fatalf("via %s", l.Via)
	}
	if _, err := l.Admin.As(daemon.LocalActor(), "").AddUser(ctx, api.AddUserRequest{Name: "gina", Roles: []string{"access"}}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	// The daemon's projection follows STATE on its own consumer: it sees
	// the user a moment after the append, not at once.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, ok := b.Store.User("gina"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon does not see the user added through Attach")
		}
	}

	// Another data dir whose configuration names the same NATS address:
	// that NATS holds another broker's state, so it is not used.
	other := *b.cfg
	odir := t.TempDir()
	other.DataDir, other.NATS.Embedded.StoreDir = odir, filepath.Join(odir, "nats")
	l, err = daemon.Attach(ctx, &other)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(l.Via, "in-process") {
		t.Fatalf("attached to another broker's NATS: %s", l.Via)
	}
	l.Close()

	// Its NATS unreachable: the data dir is locked, no second server.
	cfg := *b.cfg
	cfg.NATS.Embedded.Listen = "-"
	if _, err := daemon.Attach(ctx, &cfg); err == nil || !strings.Contains(err.Error(), "a tollgate daemon runs on data dir") {
		t.Fatalf("attach beside a daemon without listener: %v", err)
	}

	// No daemon: an in-process server on the data dir, kept across uses.
	dir := t.TempDir()
	cfg2 := cfg
	cfg2.DataDir, cfg2.NATS.Embedded.StoreDir = dir, filepath.Join(dir, "nats")
	for i, name := range []string{"hank", "ida"} {
		l, err := daemon.Attach(ctx, &cfg2)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(l.Via, "in-process") {
			t.Fatalf("via %s", l.Via)
		}
		a := l.Admin.As(daemon.LocalActor(), "")
		if _, err := a.AddUser(ctx, api.AddUserRequest{Name: name, Roles: []string{"access"}}); err != nil {
			t.Fatal(err)
		}
		us, _ := a.Users(ctx)
		if len(us) != i+1 || us[0].CreatedBy != daemon.LocalActor().User {
			t.Fatalf("users after %d: %+v", i+1, us)
		}
		l.Close()
	}
}

func TestDatabasesEmptySaysWhy(t *testing.T) {
	b := startBroker(t, login.Options{})
	ctx := ctxT(t)
	if _, err := b.Admin.As(admin, "").UpsertRoles(ctx, "kind: role\nmetadata: {name: dev}\nspec:\n  allow:\n    db_labels: {env: dev}\n    db_users: [app]\n    db_names: ['*']\n"); err != nil {
		t.Fatal(err)
	}
	c := b.client(t, nil)
	alice, _, err := b.login(t, c, "alice", goodPassword, b.addUser(t, "alice", "access"))
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := b.login(t, c, "bob", goodPassword, b.addUser(t, "bob", "dev"))
	if err != nil {
		t.Fatal(err)
	}
	why := func(cert *tls.Certificate) string {
		dbs, why, err := b.client(t, cert).MyDatabasesWhy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(dbs) > 0 && why != "" {
			t.Fatalf("%d databases and a reason %q", len(dbs), why)
		}
		return why
	}
	if got := why(alice); got != api.EmptyNoneRegistered {
		t.Fatalf("nothing registered: %q", got)
	}
	reg := func(name, env string, ttl time.Duration) {
		if _, err := b.Store.RegisterDatabase(ctx, admin, state.NewDatabase{Name: name, Protocol: "postgres", URI: "127.0.0.1:5432",
			Labels: map[string]string{"env": env}, HostID: "agent-1", HeartbeatTTL: ttl}); err != nil {
			t.Fatal(err)
		}
	}
	reg("pg-prod", "prod", 0)
	if got := why(bob); got != api.EmptyNoneAllowed {
		t.Fatalf("only a database bob's roles deny: %q", got)
	}
	if got := why(alice); got != "" {
		t.Fatalf("alice sees pg-prod, yet a reason %q", got)
	}
	reg("pg-dev", "dev", 50*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	if got := why(bob); got != api.EmptyNoneLive {
		t.Fatalf("bob's database without heartbeats: %q", got)
	}
}
