package login

import (
	"context"
	"crypto"
	"encoding/base64"
	"fmt"
	"net/http"
	"time"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// SessionMFATTL is the longest a per-session certificate is valid: long
// enough to start the session it was asked for, too short to keep for
// others. The agent checks it at the session's start only.
const SessionMFATTL = time.Minute

// SessionRequest asks for a certificate for one database session of a
// role with require_session_mfa, after a second factor: a code of the
// user's authenticator (OTP), or their security key in the browser
// (Browser).
type SessionRequest struct {
	Database, DBUser string
	PublicKey        crypto.PublicKey
	OTP              string
	Browser          *Browser
	Meta
}

// IssueSession checks a second factor of the caller and issues a user
// certificate good for one database and database user, for a minute
// (identity.MFASession). A code is used once, as at login; a security key
// answers in the browser, the certificate then sealed to tg (the refusal
// carries the page's BrowserURL).
func (s *Service) IssueSession(ctx context.Context, caller identity.Identity, r SessionRequest) (*Issued, error) {
	ev := &events.UserLogin{Method: events.LoginSessionMFA, SourceAddr: r.Source, UserAgent: clip(r.UserAgent, 200), Path: r.Path}
	ev.User, ev.Roles = caller.User, caller.Roles
	refuse := func(ref *Refusal) (*Issued, error) {
		ev.Success, ev.Error, ev.Reason = false, ref.Detail, ref.Reason
		if ev.Error == "" {
			ev.Error = ref.Message
		}
		if err := s.audit.Publish(ctx, ev); err != nil {
			s.log.Error("session mfa refusal not audited", "user", ev.User, "err", err)
		}
		return nil, ref
	}
	bad := func(msg string) (*Issued, error) {
		return refuse(&Refusal{Status: http.StatusBadRequest, Reason: events.LoginBadRequest, Message: "session mfa: " + msg, Detail: msg})
	}
	if r.Database == "" {
		return bad("the database is required")
	}
	if r.DBUser == "" {
		return bad("the database user is required (--db-user)")
	}
	if _, ok := s.store.Database(r.Database); !ok {
		return refuse(&Refusal{Status: http.StatusNotFound, Reason: events.LoginBadRequest, Detail: "no database " + quote(r.Database),
			Message: fmt.Sprintf("session mfa: no database %s (tg db ls lists them)", quote(r.Database))})
	}
	if err := CheckPublicKey(r.PublicKey); err != nil {
		return bad(err.Error())
	}
	u, ok := s.store.User(caller.User)
	if !ok {
		return refuse(&Refusal{Status: http.StatusForbidden, Reason: events.LoginUnknownUser, Detail: "not a stored user",
			Message: "session mfa: " + caller.User + " is not a user stored in Tollgate, so has no second factor here to check"})
	}
	now := s.now()
	if wait := max(s.sources.wait(sourceKey(r.Source), now), s.users.wait(u.Name, now)); wait > 0 {
		return refuse(&Refusal{Status: http.StatusTooManyRequests, RetryAfter: wait, Reason: events.LoginRateLimited, Detail: "too many failed checks",
			Message: fmt.Sprintf("too many failed second factor checks, retry in %ds", retrySeconds(wait))})
	}
	if u.LockedOut(now) {
		return refuse(&Refusal{Status: http.StatusTooManyRequests, RetryAfter: u.LockedUntil.Sub(now), Reason: events.LoginLocked,
			Detail:  "locked out until " + u.LockedUntil.UTC().Format(time.RFC3339) + ": " + u.LockReason,
			Message: "too many failed logins or checks, retry at " + u.LockedUntil.UTC().Format(time.RFC3339)})
	}
	want := identity.MFASession{Database: r.Database, DBUser: r.DBUser}
	switch {
	case r.OTP != "" && u.TOTP:
		ev.MFA = events.MFATOTP
		if ref := s.checkTOTP(ctx, Request{User: u.Name, OTP: r.OTP}, u, now); ref != nil {
			if ref.Status == http.StatusUnauthorized {
				s.failed(ctx, Request{User: u.Name, Meta: r.Meta}, true, now)
			}
			ref.Message = "session mfa: " + trimLogin(ref.Message)
			return refuse(ref)
		}
		want.Method = events.MFATOTP
		return s.issueSession(ctx, caller, want, r.PublicKey, r.Meta)
	case r.OTP != "":
		return bad("a one-time code was given but no authenticator app is enrolled (tg mfa ls)")
	case u.WebAuthn && r.Browser != nil:
		ev.MFA = events.MFAWebAuthn
		want.Method = events.MFAWebAuthn
		return refuse(s.askSessionKey(ctx, u, caller, want, r))
	case u.TOTP:
		return refuse(&Refusal{Status: http.StatusForbidden, Reason: events.LoginMFARequired, Detail: "no one-time code given",
			Message: "session mfa: a role of " + u.Name + " needs a second factor for each database session: give the authenticator's code (--otp=CODE, or TG_OTP)"})
	default:
		return refuse(&Refusal{Status: http.StatusForbidden, Reason: events.LoginMFARequired, Detail: "no second factor enrolled",
			Message: "session mfa: a role of " + u.Name + " needs a second factor for each database session, and none is enrolled: enroll one with tg mfa add"})
	}
}

// askSessionKey asks for the user's security key in the browser for one
// database session; the refusal names the page.
func (s *Service) askSessionKey(ctx context.Context, u state.User, caller identity.Identity, want identity.MFASession, r SessionRequest) *Refusal {
	ref := s.askKeyInBrowser(ctx, u, &browserLogin{Browser: *r.Browser, pub: r.PublicKey, session: &want, caller: caller})
	if ref.BrowserURL != "" {
		ref.Message = "session mfa: confirm with your security key in the browser"
	}
	return ref
}

// askKeyInBrowser starts a security key's check of u at the browser page
// for what bl says (a session, a removal); the refusal names the page.
func (s *Service) askKeyInBrowser(ctx context.Context, u state.User, bl *browserLogin) *Refusal {
	unavailable := func(detail string) *Refusal {
		return &Refusal{Status: http.StatusServiceUnavailable, Reason: events.LoginBadRequest, Detail: detail,
			Message: "the broker cannot ask for the user's security key; try again"}
	}
	wa, err := s.webauthn()
	if err != nil {
		return unavailable("no relying party: no public address")
	}
	creds, err := s.store.Credentials(ctx, u.Name)
	if err != nil || len(creds.WebAuthn) == 0 {
		return unavailable("no security key readable")
	}
	opts, session, err := wa.BeginLogin(waUser{name: u.Name, handle: creds.WebAuthnID, creds: creds.WebAuthn})
	if err != nil {
		return unavailable("begin: " + err.Error())
	}
	bl.options = opts
	ticket := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	s.asserting.Store(ticket, waPending{user: u.Name, session: *session, expires: s.now().Add(webauthnTTL), browser: bl})
	return &Refusal{Status: http.StatusForbidden, Reason: events.LoginMFARequired, Detail: "security key asked for in the browser",
		Message: "confirm with your security key in the browser", BrowserURL: s.origin + keyLoginPath + "?ticket=" + ticket}
}

// issueSession issues the per-session certificate: the caller's identity
// marked for one database and database user, for SessionMFATTL at most
// and never beyond the caller's own certificate. The cert.issue event
// says which factor was checked.
func (s *Service) issueSession(ctx context.Context, caller identity.Identity, m identity.MFASession, pub crypto.PublicKey, meta Meta) (*Issued, error) {
	ttl := SessionMFATTL
	if !caller.Expires.IsZero() {
		ttl = min(ttl, caller.Expires.Sub(s.now()))
	}
	if ttl < time.Second {
		return nil, &Refusal{Status: http.StatusForbidden, Message: "session mfa: your certificate expires now; log in again"}
	}
	// A session started with it may last as long as the caller's login
	// (disconnect_expired_cert then ends it), not only the minute.
	m.LoginExpires = caller.Expires
	id := identity.Identity{User: caller.User, Roles: caller.Roles, Traits: caller.Traits, AccessRequests: caller.AccessRequests, MFASession: &m}
	cert, certPEM, err := s.cas.IssueUser(pub, id, ttl)
	if err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "session mfa: " + err.Error()}
	}
	out, err := FromCertificate(cert)
	if err != nil {
		return nil, err
	}
	ci := &events.CertIssue{CAType: string(ca.User), Purpose: events.IssueSessionMFA, Subject: cert.Subject.CommonName,
		Serial: cert.SerialNumber.Text(16), NotAfter: cert.NotAfter.UTC(), CertRoles: out.Roles, SourceAddr: meta.Source,
		MFA: m.Method, DBService: m.Database, DBUser: m.DBUser}
	ci.User, ci.Roles = caller.User, caller.Roles
	if err := s.audit.Publish(ctx, ci); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAudit, err)
	}
	return &Issued{Cert: cert, CertPEM: certPEM, Identity: out}, nil
}

// trimLogin drops the "login: " of a message written for a login.
func trimLogin(msg string) string {
	const p = "login: "
	if len(msg) > len(p) && msg[:len(p)] == p {
		return msg[len(p):]
	}
	return msg
}
