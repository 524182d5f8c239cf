package daemon_test

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/events"
)

// A user enrolls an authenticator over the API with their certificate;
// from then on a password login needs its code: without one it is refused
// and says what is missing, a wrong code and a code already used (the one
// that confirmed the enrollment, then one that logged in) are refused, each
// with its event, and the secret is in no stream.
func TestTOTP(t *testing.T) {
	b := startBroker(t, login.Options{})
	ctx := ctxT(t)
	c := b.client(t, nil)
	cert, _, err := b.login(t, c, "alice", goodPassword, b.addUser(t, "alice", "access"))
	if err != nil {
		t.Fatal(err)
	}
	alice := b.client(t, cert)
	en, err := alice.BeginTOTP(ctx)
	if err != nil || len(en.Secret) < 16 || !strings.HasPrefix(en.URL, "otpauth://totp/Tollgate:alice?") {
		t.Fatalf("begin: %+v %v", en, err)
	}
	if err := alice.ConfirmTOTP(ctx, "000000"); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "wrong") {
		t.Fatalf("confirm with a wrong code: %v", err)
	}
	now := time.Now()
	first, err := totp.GenerateCode(en.Secret, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.ConfirmTOTP(ctx, first); err != nil {
		t.Fatalf("confirm: %v", err)
	}

	loginWith := func(otp string) error {
		_, err := c.Login(ctx, api.LoginRequest{User: "alice", Password: goodPassword, OTP: otp, PublicKey: pubPEM(t, newKey(t))})
		return err
	}
	last := func() auditEvent { return b.lastAudit(t, "user.login") }
	if err := loginWith(""); statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "one-time code") {
		t.Fatalf("password alone: %v", err)
	}
	if e := last(); e.m["success"] != false || e.str("reason") != events.LoginMFARequired || e.str("mfa") != events.MFATOTP {
		t.Fatalf("password alone: event %s", e.raw)
	}
	wrong := "123456"
	if wrong == first {
		wrong = "654321"
	}
	if err := loginWith(wrong); statusOf(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "wrong") {
		t.Fatalf("wrong code: %v", err)
	}
	if e := last(); e.m["success"] != false || e.str("reason") != events.LoginMFAWrong {
		t.Fatalf("wrong code: event %s", e.raw)
	}
	if err := loginWith(first); statusOf(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("the enrollment's code again: %v", err)
	}
	if e := last(); e.m["success"] != false || e.str("reason") != events.LoginMFAReused {
		t.Fatalf("reused code: event %s", e.raw)
	}
	// The next time step's code (one step of skew is accepted) logs in,
	// once.
	next, err := totp.GenerateCode(en.Secret, now.Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := loginWith(next); err != nil {
		t.Fatalf("right code: %v", err)
	}
	if e := last(); e.m["success"] != true || e.str("mfa") != events.MFATOTP || e.str("method") != events.LoginPassword {
		t.Fatalf("right code: event %s", e.raw)
	}
	if err := loginWith(next); statusOf(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("the same code twice: %v", err)
	}

	// The enrollment is an event of the user's own, without the secret;
	// no stream holds the secret.
	var enrolled []auditEvent
	for start := time.Now(); len(enrolled) == 0 && time.Since(start) < 10*time.Second; time.Sleep(20 * time.Millisecond) {
		enrolled = b.audit(t, "user.mfa_add")
	}
	if len(enrolled) != 1 || enrolled[0].str("user") != "alice" || enrolled[0].str("name") != "alice" || enrolled[0].str("method") != events.MFATOTP {
		t.Fatalf("user.mfa_add events: %v", enrolled)
	}
	for _, name := range []string{events.AuditStream, events.StateStream} {
		s, err := b.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
			if m, err := s.GetMsg(ctx, seq); err == nil && bytes.Contains(m.Data, []byte(en.Secret)) {
				t.Fatalf("%s %d holds the TOTP secret", name, seq)
			}
		}
	}
}

// A role with require_mfa is left out of certificates of logins that used
// no second factor, and out of their reissues, and says so; once the user
// enrolled an authenticator, a login with its code gets it.
func TestRequireMFARole(t *testing.T) {
	b := startBroker(t, login.Options{})
	ctx := ctxT(t)
	if _, err := b.Admin.As(admin, "").UpsertRoles(ctx, "kind: role\nmetadata: {name: dba}\nspec:\n  options: {require_mfa: true}\n  allow: {db_labels: {'*': '*'}, db_users: ['*'], db_names: ['*']}\n"); err != nil {
		t.Fatal(err)
	}
	c := b.client(t, nil)
	cert, res, err := b.login(t, c, "bob", goodPassword, b.addUser(t, "bob", "access", "dba"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Identity.Roles, ",") != "access" || strings.Join(res.WithheldRoles, ",") != "dba" {
		t.Fatalf("first login without a factor: roles %v, withheld %v", res.Identity.Roles, res.WithheldRoles)
	}
	if e := b.lastAudit(t, "user.login"); e.m["success"] != true || strings.Contains(string(e.raw), `"roles":["access","dba"]`) ||
		!strings.Contains(string(e.raw), `"withheld_roles":["dba"]`) {
		t.Fatalf("login event: %s", e.raw)
	}
	bob := b.client(t, cert)
	re, err := bob.Reissue(ctx, api.ReissueRequest{PublicKey: pubPEM(t, newKey(t))})
	if err != nil || strings.Join(re.Identity.Roles, ",") != "access" {
		t.Fatalf("reissue of a certificate without the factor: %+v %v", re, err)
	}

	en, err := bob.BeginTOTP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	code, _ := totp.GenerateCode(en.Secret, now)
	if err := bob.ConfirmTOTP(ctx, code); err != nil {
		t.Fatal(err)
	}
	next, _ := totp.GenerateCode(en.Secret, now.Add(30*time.Second))
	k := newKey(t)
	full, err := c.Login(ctx, api.LoginRequest{User: "bob", Password: goodPassword, OTP: next, PublicKey: pubPEM(t, k)})
	if err != nil || strings.Join(full.Identity.Roles, ",") != "access,dba" || len(full.WithheldRoles) != 0 {
		t.Fatalf("login with the code: %+v %v", full, err)
	}
	if e := b.lastAudit(t, "user.login"); e.str("mfa") != events.MFATOTP || !strings.Contains(string(e.raw), `"roles":["access","dba"]`) {
		t.Fatalf("login event: %s", e.raw)
	}
	// A certificate that got the role with a factor renews it.
	leaf, err := api.ParseCertificatePEM([]byte(full.CertPEM))
	if err != nil {
		t.Fatal(err)
	}
	re, err = b.client(t, &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: k, Leaf: leaf}).
		Reissue(ctx, api.ReissueRequest{PublicKey: pubPEM(t, newKey(t))})
	if err != nil || strings.Join(re.Identity.Roles, ",") != "access,dba" {
		t.Fatalf("reissue of a certificate with the factor: %+v %v", re, err)
	}
}
