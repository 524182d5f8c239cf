package security

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pquerna/otp/totp"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/test/faults"
	"github.com/tollgate-db/tollgate/webui"
)

const carolPassword = "carol's long enough password"

// mfaUser is a user of a role with require_session_mfa, logged in through
// the API with a TOTP authenticator enrolled.
type mfaUser struct {
	key    *ecdsa.PrivateKey
	login  *tls.Certificate
	client *api.Client
	secret string
	// step is the last TOTP time step used, so the next code is fresh.
	step time.Time
}

func newMFAUser(t *testing.T, w *world) *mfaUser {
	t.Helper()
	role := filepath.Join(w.dir, "dbmfa.yaml")
	if err := os.WriteFile(role, []byte("kind: role\nmetadata: {name: dbmfa}\nspec:\n  options: {require_session_mfa: true}\n  allow: {db_labels: {'*': '*'}, db_users: ['{{internal.db_users}}'], db_names: ['{{internal.db_names}}']}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := w.tollgate("roles", "create", "-f", role); err != nil {
		t.Fatalf("roles create: %v\n%s", err, out)
	}
	out, err := w.tollgate("users", "add", "carol", "--roles=dbmfa", "--db-users="+faults.DBUser+",other_user", "--db-names=postgres")
	if err != nil {
		t.Fatalf("users add: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`--invite=(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no invite in %s", out)
	}
	u := &mfaUser{}
	if u.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	pub, _ := api.EncodePublicKey(u.key.Public())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := w.apiClient(nil).Login(ctx, api.LoginRequest{User: "carol", Password: carolPassword, Invite: m[1], PublicKey: pub})
	if err != nil {
		t.Fatalf("first login: %v", err)
	}
	u.login = u.pair(t, res.CertPEM)
	u.client = w.apiClient(u.login)
	en, err := u.client.BeginTOTP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	u.secret, u.step = en.Secret, time.Now()
	if err := u.client.ConfirmTOTP(ctx, u.code(t, u.step)); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	return u
}

// code is the code of the time step of at.
func (u *mfaUser) code(t *testing.T, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(u.secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nextCode is a code of a time step not used yet (the broker accepts one
// step ahead, for clocks that drift).
func (u *mfaUser) nextCode(t *testing.T) string {
	u.step = u.step.Add(30 * time.Second)
	if time.Until(u.step) > 30*time.Second {
		t.Fatal("no fresh time step left within the broker's skew; the test asks for too many codes")
	}
	return u.code(t, u.step)
}

func (u *mfaUser) pair(t *testing.T, certPEM string) *tls.Certificate {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(u.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair([]byte(certPEM), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// files writes a certificate and the user's key for a PostgreSQL client.
func (u *mfaUser) files(t *testing.T, dir, name string, c *tls.Certificate) (string, string) {
	t.Helper()
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	der, _ := x509.MarshalPKCS8PrivateKey(u.key)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// queryAs runs sql through the agent as dbUser with cert and key.
func (w *world) queryAs(cert, key, dbUser, sql string) error {
	cfg, err := faults.PgxConfig(w.agentAddr, w.hostCA, cert, key)
	if err != nil {
		return err
	}
	cfg.User = dbUser
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// A role with require_session_mfa: the login certificate opens no
// session; a certificate issued after a TOTP code opens one to its
// database as its database user only, and not once it expired; a code
// is good for one certificate.
func TestSessionMFA(t *testing.T) {
	w := newWorld(t)
	u := newMFAUser(t, w)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	loginCert, loginKey := u.files(t, w.dir, "carol-login", u.login)
	err := w.query(loginCert, loginKey, "SELECT 'carol without a factor'")
	if err == nil || !strings.Contains(err.Error(), "session_mfa_required") || !strings.Contains(err.Error(), "login certificate") {
		t.Fatalf("the login certificate at the agent: %v, want a session_mfa_required refusal", err)
	}

	pub, _ := api.EncodePublicKey(u.key.Public())
	code := u.nextCode(t)
	res, err := u.client.SessionCert(ctx, api.SessionCertRequest{Database: faults.PGName, DBUser: faults.DBUser, PublicKey: pub, OTP: code})
	if err != nil {
		t.Fatalf("session certificate: %v", err)
	}
	sess := u.pair(t, res.CertPEM)
	if left := time.Until(sess.Leaf.NotAfter); left > time.Minute+5*time.Second {
		t.Fatalf("the session certificate is valid %s", left)
	}
	if id, err := identity.FromCertificate(sess.Leaf); err != nil || id.MFASession == nil || id.MFASession.Method != "totp" {
		t.Fatalf("session certificate identity: %+v %v", id, err)
	}
	sessCert, sessKey := u.files(t, w.dir, "carol-session", sess)
	if err := w.query(sessCert, sessKey, "SELECT 'carol with a factor'"); err != nil {
		t.Fatalf("the session certificate at the agent: %v", err)
	}
	// A session it started outlives the certificate's minute: it lasts as
	// long as the login it was asked with (disconnect_expired_cert, on by
	// default, would end it at the certificate's end otherwise).
	liveCfg, err := faults.PgxConfig(w.agentAddr, w.hostCA, sessCert, sessKey)
	if err != nil {
		t.Fatal(err)
	}
	live, err := pgx.ConnectConfig(ctx, liveCfg)
	if err != nil {
		t.Fatalf("a session with the session certificate: %v", err)
	}
	defer live.Close(context.Background())

	// The same code again is refused: it was used for a certificate.
	_, err = u.client.SessionCert(ctx, api.SessionCertRequest{Database: faults.PGName, DBUser: faults.DBUser, PublicKey: pub, OTP: code})
	if status(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replayed code: %v (status %d), want 401 already used", err, status(err))
	}
	// A wrong code too.
	wrong := "000000"
	if u.code(t, time.Now()) == wrong {
		wrong = "111111"
	}
	if _, err = u.client.SessionCert(ctx, api.SessionCertRequest{Database: faults.PGName, DBUser: faults.DBUser, PublicKey: pub, OTP: wrong}); status(err) != http.StatusUnauthorized {
		t.Fatalf("wrong code: %v", err)
	}

	// The session certificate serves its database user only.
	err = w.queryAs(sessCert, sessKey, "other_user", "SELECT 'carol as another user'")
	if err == nil || !strings.Contains(err.Error(), "session_mfa_required") || !strings.Contains(err.Error(), `not "other_user"`) {
		t.Fatalf("the session certificate as another db user: %v", err)
	}

	// A session certificate for another database opens nothing here,
	// whatever the roles allow.
	other := u.signed(t, w, identity.MFASession{Database: "another-db", DBUser: faults.DBUser, Method: "totp"}, time.Minute)
	oCert, oKey := u.files(t, w.dir, "carol-other", other)
	if err := w.query(oCert, oKey, "SELECT 'carol with another database''s certificate'"); err == nil || !strings.Contains(err.Error(), `for database "another-db"`) {
		t.Fatalf("another database's session certificate: %v", err)
	}

	// Once expired, the session certificate starts nothing.
	var last string
	after, err := waitRefusedEvery(t, "the expired session certificate", 2*time.Second, 90*time.Second, func() error {
		last = fmt.Sprintf("carol at %s", time.Now().Format(time.RFC3339Nano))
		return w.query(sessCert, sessKey, "SELECT '"+last+"'")
	})
	if time.Now().Before(sess.Leaf.NotAfter) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("refused %v later, the certificate expiring at %s: %v", after, sess.Leaf.NotAfter, err)
	}
	for _, s := range []string{"carol without a factor", "carol as another user", "another database's certificate", last} {
		if w.logged(s) {
			t.Fatalf("PostgreSQL ran %q", s)
		}
	}
	if !w.logged("carol with a factor") {
		t.Fatal("the allowed statement is not in PostgreSQL's log")
	}

	// Each refusal is a db.session.start event that says why, and the
	// session certificate's issue names the factor.
	starts := auditEvents(t, w, "db.session.start", "carol")
	refusedStarts := 0
	for _, ev := range starts {
		e, _ := ev["error"].(string)
		if ev["success"] == false && ev["rule"] == "require_session_mfa" && strings.Contains(e, ": session_mfa_required: ") {
			refusedStarts++
		}
	}
	// (The expired certificate fails the handshake, before any session.)
	if refusedStarts != 3 {
		t.Fatalf("%d refused db.session.start events with session_mfa_required, want the login certificate's, the other user's and the other database's:\n%v", refusedStarts, starts)
	}
	var issued bool
	for _, ev := range auditEvents(t, w, "cert.issue", "carol") {
		if ev["purpose"] == "session_mfa" && ev["mfa"] == "totp" && ev["db_service"] == faults.PGName && ev["db_user"] == faults.DBUser {
			issued = true
		}
		if b, _ := json.Marshal(ev); strings.Contains(string(b), code) || strings.Contains(string(b), u.secret) {
			t.Fatalf("an event holds the code or the secret: %s", b)
		}
	}
	if !issued {
		t.Fatal("no cert.issue event for the session certificate with its factor")
	}
	// The agent checks live sessions every 50 ms: two seconds past the
	// certificate's end, it would have ended one bound to it.
	time.Sleep(time.Until(sess.Leaf.NotAfter.Add(2 * time.Second)))
	if _, err := live.Exec(ctx, "SELECT 'carol still in her session'"); err != nil {
		t.Fatalf("the session started with the session certificate, after the certificate's end: %v", err)
	}
}

// auditEvents are the newest AUDIT events of type typ by user.
func auditEvents(t *testing.T, w *world, typ, user string) []map[string]any {
	t.Helper()
	_, js, _ := w.as(natsserver.Auditor)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pg, err := webui.SearchAudit(ctx, js, webui.Search{TypePrefix: typ, User: user}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, r := range pg.Rows {
		var ev map[string]any
		if json.Unmarshal(r.Raw, &ev) == nil && ev["type"] == typ {
			out = append(out, ev)
		}
	}
	return out
}

// signed is a certificate the user CA signs for u's key with a session
// marking, as the broker would for another database.
func (u *mfaUser) signed(t *testing.T, w *world, m identity.MFASession, ttl time.Duration) *tls.Certificate {
	t.Helper()
	id, err := identity.FromCertificate(u.login.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	id.MFASession = &m
	_, certPEM, err := w.cas.IssueUser(u.key.Public(), id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return u.pair(t, string(certPEM))
}

// waitRefusedEvery polls try every interval until it fails, for at most
// limit.
func waitRefusedEvery(t testing.TB, what string, every, limit time.Duration, try func() error) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	for {
		if err := try(); err != nil {
			return time.Since(start), err
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: still allowed %s later", what, limit)
		}
		time.Sleep(every)
	}
}

// Removing a second factor needs one checked now: the login certificate
// alone, a wrong code and a code already used are refused and the factor
// stays; a fresh code removes it. An administrator's reset removes them
// all, and its event names the administrator.
func TestMFARemoveNeedsAFreshFactor(t *testing.T) {
	w := newWorld(t)
	u := newMFAUser(t, w)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	listed := func() bool {
		t.Helper()
		fs, err := u.client.Factors(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(fs, func(f api.Factor) bool { return f.Name == "totp" })
	}
	if !listed() {
		t.Fatal("the enrolled authenticator is not listed")
	}
	err := u.client.RemoveFactor(ctx, api.RemoveFactorRequest{Factor: "totp"})
	if status(err) != http.StatusForbidden || !strings.Contains(err.Error(), "needs one checked now") || !listed() {
		t.Fatalf("removal with the certificate alone: %v (status %d)", err, status(err))
	}
	wrong := "000000"
	if u.code(t, time.Now()) == wrong {
		wrong = "111111"
	}
	if err := u.client.RemoveFactor(ctx, api.RemoveFactorRequest{Factor: "totp", OTP: wrong}); status(err) != http.StatusUnauthorized || !listed() {
		t.Fatalf("removal with a wrong code: %v", err)
	}
	// The enrollment's own code, seen by whoever watched it typed.
	used := u.code(t, u.step)
	if err := u.client.RemoveFactor(ctx, api.RemoveFactorRequest{Factor: "totp", OTP: used}); status(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "already used") || !listed() {
		t.Fatalf("removal with a used code: %v", err)
	}
	if err := u.client.RemoveFactor(ctx, api.RemoveFactorRequest{Factor: "nosuch", OTP: u.code(t, time.Now())}); status(err) != http.StatusNotFound || !strings.Contains(err.Error(), `no second factor "nosuch"`) {
		t.Fatalf("removal of an unknown factor: %v", err)
	}
	if err := u.client.RemoveFactor(ctx, api.RemoveFactorRequest{Factor: "totp", OTP: u.nextCode(t)}); err != nil {
		t.Fatalf("removal with a fresh code: %v", err)
	}
	if listed() {
		t.Fatal("the authenticator is still listed after its removal")
	}

	// Enrolled again, then reset by an administrator.
	en, err := u.client.BeginTOTP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	u.secret = en.Secret
	if err := u.client.ConfirmTOTP(ctx, u.code(t, time.Now())); err != nil {
		t.Fatal(err)
	}
	if !listed() {
		t.Fatal("the authenticator enrolled again is not listed")
	}
	if out, err := w.tollgate("users", "reset-mfa", "carol"); err != nil || !strings.Contains(out, "second factors of carol removed") {
		t.Fatalf("users reset-mfa: %v\n%s", err, out)
	}
	if listed() {
		t.Fatal("the authenticator is still listed after the reset")
	}
	if out, err := w.tollgate("users", "reset-mfa", "nobody"); err == nil || !strings.Contains(out, "nobody") {
		t.Fatalf("reset of an unknown user: %v\n%s", err, out)
	}
	removals := stateEvents(t, w, "user.mfa_remove")
	if len(removals) != 2 || removals[0]["factor"] != "totp" || removals[0]["user"] != "carol" ||
		removals[1]["reset"] != true || removals[1]["user"] == "carol" || removals[1]["user"] == "" || removals[1]["user"] == nil {
		t.Fatalf("user.mfa_remove events: %v", removals)
	}
	for _, ev := range removals {
		b, _ := json.Marshal(ev)
		if strings.Contains(string(b), u.secret) || strings.Contains(string(b), "secret") {
			t.Fatalf("a removal event holds a secret: %s", b)
		}
	}
}

// stateEvents are the events of type typ in STATE, oldest first.
func stateEvents(t *testing.T, w *world, typ string) []map[string]any {
	t.Helper()
	_, js, _ := w.as(natsserver.Auditor)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		_ = events.SplitEvents(m.Data, func(data []byte) error {
			var ev map[string]any
			if json.Unmarshal(data, &ev) == nil && ev["type"] == typ {
				out = append(out, ev)
			}
			return nil
		})
	}
	return out
}

// tg db connect for a role with require_session_mfa: without a code it
// refuses before connecting and says why; with a code psql runs through
// the agent on the certificate issued for the session; the same code
// again is refused.
func TestSessionMFAThroughTG(t *testing.T) {
	w := newWorld(t)
	u := newMFAUser(t, w)
	userCA, err := w.cas.CertPEM(ca.User)
	if err != nil {
		t.Fatal(err)
	}
	hostCA, err := w.cas.CertPEM(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	var cas []*x509.Certificate
	for _, p := range [][]byte{userCA, hostCA} {
		b, _ := pem.Decode(p)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		cas = append(cas, c)
	}
	f, err := identity.NewFile(w.proxyAddr, u.key, u.login.Leaf, cas)
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(w.dir, "carol.identity")
	if err := identity.WriteFile(idFile, f); err != nil {
		t.Fatal(err)
	}
	tg := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(tgBin, append([]string{"-i", idFile}, args...)...)
		cmd.Env = append([]string{"HOME=" + w.dir, "PATH=" + os.Getenv("PATH")}, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := tg(nil, "db", "connect", faults.PGName, "--db-user="+faults.DBUser, "--", "-c", "SELECT 'tg without a code'")
	if err == nil || !strings.Contains(out, "--otp") || !strings.Contains(out, "second factor for each database session") {
		t.Fatalf("tg db connect without a code: %v\n%s", err, out)
	}
	code := u.nextCode(t)
	out, err = tg([]string{"TG_OTP=" + code}, "db", "connect", faults.PGName, "--db-user="+faults.DBUser, "--", "-At", "-c", "SELECT 'tg with a code'")
	if err != nil || !strings.Contains(out, "second factor checked (totp)") || !strings.Contains(out, "tg with a code") {
		t.Fatalf("tg db connect with a code: %v\n%s", err, out)
	}
	out, err = tg(nil, "db", "connect", faults.PGName, "--db-user="+faults.DBUser, "--otp="+code, "--", "-c", "SELECT 'tg with the code again'")
	if err == nil || !strings.Contains(out, "already used") {
		t.Fatalf("tg db connect with a used code: %v\n%s", err, out)
	}
	for s, want := range map[string]bool{"tg without a code": false, "tg with a code": true, "tg with the code again": false} {
		if w.logged(s) != want {
			t.Fatalf("PostgreSQL's log has %q: %v, want %v", s, !want, want)
		}
	}
}
