// Package login authenticates people and agents to the broker and issues
// their certificates: passwords (argon2id, broker/password) and one-time
// invites for users, the user certificate for mTLS calls and reissue, join
// tokens for agents. Every attempt, refused or not, is an audit event
// (user.login, token.use), and every certificate issued is one too
// (cert.issue), published before the certificate is handed out: no
// certificate exists that the audit trail does not know.
package login

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/password"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// Auditor stores audit events; *events.Publisher is one.
type Auditor interface {
	Publish(ctx context.Context, ev events.Event) error
	PublishBatch(ctx context.Context, evs []events.Event) error
}

// Options tune a Service; the zero value is the production setting.
type Options struct {
	// Params of new password hashes; zero means password.Default.
	Params password.Params
	// Limit of failed logins per user and per source address; zero means
	// DefaultLimit.
	Limit Limit
	// MaxHashing bounds the argon2 computations running at once (each
	// takes Params.Memory); zero means 2 per CPU. Logins beyond it wait.
	MaxHashing int
	// Log receives operational errors (never secrets); nil discards.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// WebAuthnOrigin is the web UI's origin (https://HOST:PORT, the
	// proxy's public address) that security keys are registered for;
	// empty, none can be.
	WebAuthnOrigin string
}

// Service is the broker's authentication.
type Service struct {
	store   *state.Store
	cas     *ca.Authorities
	audit   Auditor
	params  password.Params
	users   *limiter
	sources *limiter
	hashing chan struct{}
	invite  sync.Mutex // serialises first logins, so an invite is used once
	// enrolling are TOTP secrets shown to a user and not yet confirmed
	// with a code, by user name.
	enrolling sync.Map
	// wa is the WebAuthn relying party; registering and asserting are
	// ceremonies in progress, by user name and by ticket.
	wa          *webauthn.WebAuthn
	registering sync.Map
	asserting   sync.Map
	// origin is the web UI's (WebAuthnOrigin), where tg's browser pages
	// are; browserRegs are registrations started by tg, by ticket.
	origin      string
	browserRegs sync.Map
	log         *slog.Logger
	now         func() time.Time
}

// New returns the authentication service over the broker's state and CAs.
func New(store *state.Store, cas *ca.Authorities, audit Auditor, o Options) *Service {
	if o.Params == (password.Params{}) {
		o.Params = password.Default
	}
	if o.Limit.Burst <= 0 || o.Limit.Per <= 0 {
		o.Limit = DefaultLimit
	}
	if o.MaxHashing <= 0 {
		o.MaxHashing = 2 * runtime.GOMAXPROCS(0)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	wa, err := relyingParty(o.WebAuthnOrigin)
	if err != nil {
		// A public address that is no valid relying party (an IP
		// address, say) only disables security keys.
		o.Log.Warn("security keys disabled", "origin", o.WebAuthnOrigin, "err", err)
	}
	return &Service{
		store: store, cas: cas, audit: audit, params: o.Params,
		users: newLimiter(o.Limit), sources: newLimiter(o.Limit),
		hashing: make(chan struct{}, o.MaxHashing),
		log:     o.Log, now: o.Now, wa: wa, origin: o.WebAuthnOrigin,
	}
}

// Refusal is a refused request: Message is what the client is told, Reason
// and Detail what the audit event records.
type Refusal struct {
	// Status is the HTTP status to answer with.
	Status  int
	Message string
	// Reason is one of the events.Login* codes.
	Reason string
	// Detail says for the audit trail what exactly failed.
	Detail     string
	RetryAfter time.Duration
	// WebAuthn, on a right password of a user with a security key, is
	// the challenge the key must answer (LoginWebAuthn).
	WebAuthn *WebAuthnChallenge
	// BrowserURL, for a login that asked for a loopback return, is the
	// page where the security key answers instead.
	BrowserURL string
}

func (r *Refusal) Error() string { return r.Message }

// ErrAudit wraps a failure to store an audit event: the action it records
// did not happen.
var ErrAudit = errors.New("audit store unavailable: nothing was issued")

// Meta is what the API knows about a request, for the audit trail.
type Meta struct {
	Source    string // client IP address
	UserAgent string
	Path      string
}

// Request is a password login.
type Request struct {
	User     string
	Password string
	// Invite, on the first login, lets the password be set.
	Invite string
	// OTP is the one-time code of the user's authenticator, required once
	// one is enrolled.
	OTP       string
	PublicKey crypto.PublicKey
	TTL       time.Duration
	// Browser, from tg, lets a security key finish the login in the
	// browser (the refusal's BrowserURL), the answer sealed to tg.
	Browser *Browser
	Meta
}

// Issued is a certificate and, for user certificates, its identity.
type Issued struct {
	Cert     *x509.Certificate
	CertPEM  []byte
	Identity identity.Identity
	// Withheld are the user's roles left out for want of a second factor.
	Withheld []string
}

// The one message for every wrong user name or password, so a client
// cannot tell which user names exist.
const (
	msgWrongPassword = "login failed: wrong user name or password"
	msgBadInvite     = "login failed: wrong user name, or the invite is invalid, expired or already used"
)

// Login checks a password, or sets it with an invite, and issues a user
// certificate for req.PublicKey carrying the user's roles and traits.
func (s *Service) Login(ctx context.Context, req Request) (*Issued, error) {
	method := events.LoginPassword
	if req.Invite != "" {
		method = events.LoginInvite
	}
	ev := &events.UserLogin{Method: method, SourceAddr: req.Source, UserAgent: clip(req.UserAgent, 200), Path: req.Path}
	ev.User = clip(req.User, 256)
	refuse := func(r *Refusal) (*Issued, error) {
		ev.Success, ev.Error, ev.Reason = false, r.Detail, r.Reason
		if err := s.audit.Publish(ctx, ev); err != nil {
			s.log.Error("login refusal not audited", "user", ev.User, "reason", r.Reason, "err", err)
		}
		return nil, r
	}
	if err := state.ValidUserName(req.User); err != nil {
		return refuse(&Refusal{Status: http.StatusBadRequest, Message: "login: " + err.Error(), Reason: events.LoginBadRequest, Detail: err.Error()})
	}
	if req.Password == "" {
		return refuse(&Refusal{Status: http.StatusBadRequest, Message: "login: the password is empty", Reason: events.LoginBadRequest, Detail: "empty password"})
	}
	if err := CheckPublicKey(req.PublicKey); err != nil {
		return refuse(&Refusal{Status: http.StatusBadRequest, Message: "login: " + err.Error(), Reason: events.LoginBadRequest, Detail: err.Error()})
	}

	now := s.now()
	u, known := s.store.User(req.User)
	wait := max(s.sources.wait(sourceKey(req.Source), now), s.users.wait(req.User, now))
	reason, detail := events.LoginRateLimited, "too many failed logins"
	if known && u.LockedOut(now) {
		if d := u.LockedUntil.Sub(now); d > wait {
			wait, reason, detail = d, events.LoginLocked, "locked out until "+u.LockedUntil.UTC().Format(time.RFC3339)+": "+u.LockReason
		}
	}
	if wait > 0 {
		return refuse(&Refusal{Status: http.StatusTooManyRequests, RetryAfter: wait, Reason: reason, Detail: detail,
			Message: fmt.Sprintf("too many failed logins, retry in %ds", retrySeconds(wait))})
	}

	select {
	case s.hashing <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r := s.check(ctx, req, u, known)
	<-s.hashing
	switch {
	case r != nil || req.Invite != "":
	case u.WebAuthn && (!u.TOTP || req.OTP == ""):
		// A user with a security key and no code given: the login
		// waits for the key.
		ev.MFA = events.MFAWebAuthn
		r = s.askWebAuthn(ctx, u, req)
	case u.TOTP:
		ev.MFA = events.MFATOTP
		r = s.checkTOTP(ctx, req, u, now)
	}
	if r != nil {
		if r.Status == http.StatusUnauthorized {
			s.failed(ctx, req, known, now)
		}
		return refuse(r)
	}
	u, _ = s.store.User(req.User) // the invite path changed it
	id := identity.Identity{User: u.Name, Roles: u.Roles, Traits: u.Traits}
	if ev.MFA == "" {
		id.Roles, ev.WithheldRoles = s.withholdMFA(u.Roles, nil)
	}
	ev.Success, ev.Roles = true, id.Roles
	return s.issueUser(ctx, state.Actor{User: u.Name, Roles: u.Roles}, id, req.PublicKey, req.TTL, events.IssueLogin, req.Source, ev)
}

// check verifies the password or the invite; nil means the user is
// authenticated. It runs while holding a hashing slot.
func (s *Service) check(ctx context.Context, req Request, u state.User, known bool) *Refusal {
	wrong := func(reason, detail string) *Refusal {
		msg := msgWrongPassword
		if req.Invite != "" {
			msg = msgBadInvite
		}
		return &Refusal{Status: http.StatusUnauthorized, Message: msg, Reason: reason, Detail: detail}
	}
	if !known {
		password.VerifyNothing(req.Password)
		return wrong(events.LoginUnknownUser, "no user "+quote(req.User))
	}
	if req.Invite != "" {
		return s.useInvite(ctx, req, u, wrong)
	}
	creds, err := s.store.Credentials(ctx, u.Name)
	if err != nil {
		s.log.Error("read credentials", "user", u.Name, "err", err)
		return &Refusal{Status: http.StatusServiceUnavailable, Message: "login: the broker cannot read its credentials store; try again", Reason: events.LoginBadRequest, Detail: "credentials store: " + err.Error()}
	}
	if creds.PasswordHash == "" {
		password.VerifyNothing(req.Password)
		return wrong(events.LoginNoPassword, "the user has no password yet (first login needs the invite)")
	}
	switch err := password.Verify(creds.PasswordHash, req.Password); {
	case errors.Is(err, password.ErrMismatch):
		return wrong(events.LoginWrongPassword, "wrong password")
	case err != nil:
		s.log.Error("stored password hash unreadable", "user", u.Name, "err", err)
		return wrong(events.LoginWrongPassword, "stored password hash unreadable: "+err.Error())
	}
	return nil
}

func (s *Service) useInvite(ctx context.Context, req Request, u state.User, wrong func(string, string) *Refusal) *Refusal {
	s.invite.Lock()
	defer s.invite.Unlock()
	creds, err := s.store.Credentials(ctx, u.Name)
	if err != nil {
		s.log.Error("read credentials", "user", u.Name, "err", err)
		return &Refusal{Status: http.StatusServiceUnavailable, Message: "login: the broker cannot read its credentials store; try again", Reason: events.LoginBadRequest, Detail: "credentials store: " + err.Error()}
	}
	given := InviteHash(req.Invite)
	switch {
	case creds.InviteHash == "" && (creds.PasswordHash != "" || u.PasswordSet):
		return wrong(events.LoginInviteUsed, "the user's invite was already used to set a password")
	case creds.InviteHash == "":
		return wrong(events.LoginInviteInvalid, "the user has no invite")
	case subtle.ConstantTimeCompare([]byte(given), []byte(creds.InviteHash)) != 1:
		return wrong(events.LoginInviteInvalid, "the invite does not match the user's")
	case !s.now().Before(creds.InviteExpires):
		return wrong(events.LoginInviteExpired, "the invite expired at "+creds.InviteExpires.UTC().Format(time.RFC3339))
	}
	if err := password.Check(req.Password); err != nil {
		return &Refusal{Status: http.StatusBadRequest, Message: "login: " + err.Error(), Reason: events.LoginWeakPassword, Detail: err.Error()}
	}
	hash, err := password.Hash(req.Password, s.params)
	if err != nil {
		return &Refusal{Status: http.StatusInternalServerError, Message: "login: " + err.Error(), Reason: events.LoginBadRequest, Detail: err.Error()}
	}
	if err := s.store.SetPassword(ctx, state.Actor{User: u.Name, Roles: u.Roles}, u.Name, hash, true); err != nil {
		s.log.Error("set password", "user", u.Name, "err", err)
		return &Refusal{Status: http.StatusServiceUnavailable, Message: "login: the password could not be stored; try again with the same invite", Reason: events.LoginBadRequest, Detail: "set password: " + err.Error()}
	}
	return nil
}

// failed counts a failed login against the source and the user; a user
// whose bucket ran dry is locked out in STATE too, so that every broker
// refuses them until it refills.
func (s *Service) failed(ctx context.Context, req Request, known bool, now time.Time) {
	s.sources.fail(sourceKey(req.Source), now)
	wait := s.users.fail(req.User, now)
	if wait <= 0 || !known {
		return
	}
	until := now.Add(wait).UTC().Truncate(time.Second).Add(time.Second)
	reason := fmt.Sprintf("%d failed logins within %s", s.users.limit.Burst, s.users.limit.Per)
	_, err := s.store.UpdateUser(ctx, state.Actor{User: "tollgate:broker"}, req.User, func(u *state.User) error {
		if u.LockedUntil.After(until) {
			return nil
		}
		u.LockedUntil, u.LockReason = until, reason
		return nil
	})
	if err != nil {
		s.log.Error("record lock-out", "user", req.User, "err", err)
	}
}

// Authenticate verifies the user certificate chain a client presented
// (mTLS) and returns its identity as it stands now: a removed user is
// refused, and the roles are cut to those the user still holds (plus
// those of approved requests the certificate carries). A refusal is
// audited as a failed certificate login; a user or role under a lock is
// refused too.
func (s *Service) Authenticate(ctx context.Context, certs []*x509.Certificate, m Meta) (identity.Identity, error) {
	now := s.now()
	id, err := s.cas.VerifyUser(certs)
	var r *Refusal
	if err != nil {
		r = &Refusal{Status: http.StatusUnauthorized, Message: err.Error(), Reason: certReason(err), Detail: err.Error()}
		if len(certs) == 0 {
			r.Message = "this operation needs a user certificate: log in with `tg login` or pass an identity file"
		}
	} else if id, err = s.store.CurrentIdentity(now, id); err != nil {
		r = &Refusal{Status: http.StatusUnauthorized, Message: err.Error(), Reason: events.LoginUnknownUser, Detail: err.Error()}
	} else if l, locked := s.store.LockedOut(now, id.User, id.Roles, ""); locked {
		msg := "locked"
		if l.Message != "" {
			msg += ": " + l.Message
		}
		r = &Refusal{Status: http.StatusForbidden, Message: fmt.Sprintf("user %s is %s", id.User, msg), Reason: events.LoginLocked, Detail: "lock " + l.ID}
	}
	if r == nil {
		return id, nil
	}
	ev := &events.UserLogin{Status: events.Status{Error: r.Detail}, Method: events.LoginCertificate, Reason: r.Reason,
		SourceAddr: m.Source, UserAgent: clip(m.UserAgent, 200), Path: m.Path}
	if len(certs) > 0 && certs[0] != nil {
		ev.User = clip(certs[0].Subject.CommonName, 256)
	}
	if aerr := s.audit.Publish(ctx, ev); aerr != nil {
		s.log.Error("certificate refusal not audited", "user", ev.User, "reason", r.Reason, "err", aerr)
	}
	return identity.Identity{}, r
}

// certReason maps a ca.VerifyUser error to a login reason code.
func certReason(err error) string {
	m := err.Error()
	switch {
	case strings.Contains(m, "none presented"):
		return events.LoginNoCert
	case strings.Contains(m, "was altered"):
		return events.LoginCertAltered
	case strings.Contains(m, "not by this cluster"):
		return events.LoginCertUntrusted
	case strings.Contains(m, "expired at"):
		return events.LoginCertExpired
	case strings.Contains(m, "not valid before"):
		return events.LoginCertNotYetValid
	}
	return events.LoginCertInvalid
}

// Reissue issues a fresh certificate to the holder of a verified user
// certificate, with the roles and traits the user has now: a user removed
// since cannot renew.
func (s *Service) Reissue(ctx context.Context, caller identity.Identity, pub crypto.PublicKey, ttl time.Duration, m Meta) (*Issued, error) {
	if err := CheckPublicKey(pub); err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "reissue: " + err.Error()}
	}
	u, ok := s.store.User(caller.User)
	ev := &events.UserLogin{Method: events.LoginCertificate, SourceAddr: m.Source, UserAgent: clip(m.UserAgent, 200), Path: m.Path}
	ev.User, ev.Roles = caller.User, caller.Roles
	if !ok {
		ev.Reason, ev.Error = events.LoginUnknownUser, "no user "+quote(caller.User)+" (identity files are renewed with tollgate auth sign)"
		if err := s.audit.Publish(ctx, ev); err != nil {
			s.log.Error("reissue refusal not audited", "user", caller.User, "err", err)
		}
		return nil, &Refusal{Status: http.StatusForbidden, Reason: ev.Reason, Detail: ev.Error,
			Message: fmt.Sprintf("reissue: %q is not a Tollgate user; an identity file is renewed with `tollgate auth sign --format=identity`", caller.User)}
	}
	id := identity.Identity{User: u.Name, Roles: u.Roles, Traits: u.Traits}
	// A role that needs a second factor is renewed only for a certificate
	// that got it with one.
	id.Roles, ev.WithheldRoles = s.withholdMFA(u.Roles, caller.Roles)
	ev.Success, ev.Roles = true, id.Roles
	return s.issueUser(ctx, state.Actor{User: u.Name, Roles: caller.Roles}, id, pub, ttl, events.IssueReissue, m.Source, ev)
}

// SignUser issues a user certificate on an admin's behalf (identity
// files), capped by the roles' max_session_ttl only when ttl is 0.
func (s *Service) SignUser(ctx context.Context, by state.Actor, id identity.Identity, pub crypto.PublicKey, ttl time.Duration, source string) (*Issued, error) {
	if err := CheckPublicKey(pub); err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "sign: " + err.Error()}
	}
	return s.issue(ctx, by, id, pub, ttl, events.IssueSign, source, nil, false)
}

// issueUser issues a certificate for a login or reissue, its TTL capped by
// the roles, and audits the login event (if any) with it.
func (s *Service) issueUser(ctx context.Context, by state.Actor, id identity.Identity, pub crypto.PublicKey, ttl time.Duration, purpose, source string, login *events.UserLogin) (*Issued, error) {
	return s.issue(ctx, by, id, pub, ttl, purpose, source, login, true)
}

func (s *Service) issue(ctx context.Context, by state.Actor, id identity.Identity, pub crypto.PublicKey, ttl time.Duration, purpose, source string, login *events.UserLogin, capTTL bool) (*Issued, error) {
	if ttl < 0 {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: fmt.Sprintf("ttl %s is negative", ttl)}
	}
	if capTTL {
		ttl = s.UserTTL(id.Roles, ttl)
	}
	cert, certPEM, err := s.cas.IssueUser(pub, id, ttl)
	if err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: err.Error()}
	}
	out, err := FromCertificate(cert)
	if err != nil {
		return nil, err
	}
	ci := &events.CertIssue{CAType: string(ca.User), Purpose: purpose, Subject: cert.Subject.CommonName,
		Serial: cert.SerialNumber.Text(16), NotAfter: cert.NotAfter.UTC(), CertRoles: out.Roles, CertTraits: out.Traits, SourceAddr: source}
	ci.User, ci.Roles = by.User, by.Roles
	evs := []events.Event{ci}
	if login != nil {
		evs = []events.Event{login, ci}
	}
	if err := s.audit.PublishBatch(ctx, evs); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAudit, err)
	}
	is := &Issued{Cert: cert, CertPEM: certPEM, Identity: out}
	if login != nil {
		is.Withheld = login.WithheldRoles
	}
	return is, nil
}

// UserTTL is the lifetime of a user certificate for roles: the ttl asked
// for (ca.DefaultUserTTL when 0), at most the roles' smallest
// max_session_ttl, or ca.DefaultUserTTL when no role sets one.
func (s *Service) UserTTL(roleNames []string, ttl time.Duration) time.Duration {
	limit := ca.DefaultUserTTL
	roles, _ := s.store.ResolveRoles(roleNames)
	if m := access.Options(roles).MaxSessionTTL; m > 0 {
		limit = m
	}
	if ttl == 0 || ttl > limit {
		return limit
	}
	return ttl
}

// FromCertificate reads the identity of a certificate just issued.
func FromCertificate(c *x509.Certificate) (identity.Identity, error) {
	return identity.FromCertificate(c)
}

// Join exchanges a join token for a host certificate: an agent's with a
// db token, a proxy's (host id ca.ProxyHostID) with a proxy token. A
// refused token is audited (token.use, success false) with why.
func (s *Service) Join(ctx context.Context, token, hostID string, hosts []string, pub crypto.PublicKey, m Meta) (*Issued, error) {
	if token == "" || hostID == "" {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "join: token and host_id are required"}
	}
	// The proxies' host id is what other proxies and the event plane
	// recognise a proxy by, so only a proxy token issues it, and a proxy
	// token issues nothing else.
	tokenType := state.TokenDB
	if hostID == ca.ProxyHostID {
		tokenType = state.TokenProxy
	}
	if err := CheckPublicKey(pub); err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "join: " + err.Error()}
	}
	if err := s.checkHostNames(hostID, hosts, "join"); err != nil {
		return nil, err
	}
	by := state.Actor{User: "host:" + hostID}
	if _, err := s.store.UseToken(ctx, by, state.TokenID(token), hostID, tokenType); err != nil {
		var tr *state.TokenRefusal
		if errors.As(err, &tr) {
			if aerr := s.audit.Publish(ctx, tr.Event); aerr != nil {
				s.log.Error("token refusal not audited", "host_id", hostID, "err", aerr)
			}
			return nil, &Refusal{Status: http.StatusForbidden, Message: tr.Error(), Reason: tr.Reason}
		}
		if errors.Is(err, state.ErrInvalid) {
			return nil, &Refusal{Status: http.StatusBadRequest, Message: "join: " + err.Error()}
		}
		return nil, err
	}
	cert, certPEM, err := s.cas.IssueHost(pub, hostID, hosts, 0)
	if err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "join: " + err.Error()}
	}
	ci := &events.CertIssue{CAType: string(ca.Host), Purpose: events.IssueJoin, Subject: hostID,
		Serial: cert.SerialNumber.Text(16), NotAfter: cert.NotAfter.UTC(), Hosts: hosts, SourceAddr: m.Source}
	ci.User = by.User
	if err := s.audit.Publish(ctx, ci); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAudit, err)
	}
	return &Issued{Cert: cert, CertPEM: certPEM}, nil
}

// IssueDBClient signs the certificate an agent on another machine presents
// to database as dbUser. The agent proves who it is with the host
// certificate it got by joining (certs, from mTLS), and gets certificates
// only for the databases registered to its host id: a joined host cannot
// log in to databases other agents serve. The db-client CA's key stays
// here, and every certificate it signs for an agent is audited.
func (s *Service) IssueDBClient(ctx context.Context, certs []*x509.Certificate, database, dbUser string, pub crypto.PublicKey, ttl time.Duration, m Meta) (*Issued, error) {
	hostID, err := s.verifyAgent(certs, "db-client certificate")
	if err != nil {
		return nil, err
	}
	if database == "" || dbUser == "" {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "db-client certificate: database and db_user are required"}
	}
	if d, ok := s.store.Database(database); !ok {
		return nil, &Refusal{Status: http.StatusForbidden,
			Message: fmt.Sprintf("db-client certificate: database %s is not registered; host %s gets certificates only for the databases it registered", quote(database), hostID)}
	} else if d.HostID != hostID {
		return nil, &Refusal{Status: http.StatusForbidden,
			Message: fmt.Sprintf("db-client certificate: database %s is registered to host %s, not to host %s", quote(database), d.HostID, hostID)}
	}
	if err := CheckPublicKey(pub); err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "db-client certificate: " + err.Error()}
	}
	if ttl <= 0 || ttl > ca.DefaultDBClientTTL {
		ttl = ca.DefaultDBClientTTL
	}
	cert, certPEM, err := s.cas.IssueDBClient(pub, dbUser, ttl)
	if err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "db-client certificate: " + err.Error()}
	}
	ci := &events.CertIssue{CAType: string(ca.DBClient), Purpose: events.IssueAgent, Subject: dbUser,
		Serial: cert.SerialNumber.Text(16), NotAfter: cert.NotAfter.UTC(), SourceAddr: m.Source}
	ci.User = "host:" + hostID
	if err := s.audit.Publish(ctx, ci); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAudit, err)
	}
	return &Issued{Cert: cert, CertPEM: certPEM}, nil
}

// RenewHost signs a fresh host certificate for the agent that presents its
// current one (certs, from mTLS), valid for hosts: an agent that serves new
// databases, or whose certificate nears its end, renews without a token.
func (s *Service) RenewHost(ctx context.Context, certs []*x509.Certificate, hosts []string, pub crypto.PublicKey, m Meta) (*Issued, error) {
	hostID, err := s.verifyHost(certs, "renewal")
	if err != nil {
		return nil, err
	}
	if err := CheckPublicKey(pub); err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "renewal: " + err.Error()}
	}
	if err := s.checkHostNames(hostID, hosts, "renewal"); err != nil {
		return nil, err
	}
	cert, certPEM, err := s.cas.IssueHost(pub, hostID, hosts, 0)
	if err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "renewal: " + err.Error()}
	}
	ci := &events.CertIssue{CAType: string(ca.Host), Purpose: events.IssueRenew, Subject: hostID,
		Serial: cert.SerialNumber.Text(16), NotAfter: cert.NotAfter.UTC(), Hosts: hosts, SourceAddr: m.Source}
	ci.User = "host:" + hostID
	if err := s.audit.Publish(ctx, ci); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAudit, err)
	}
	return &Issued{Cert: cert, CertPEM: certPEM}, nil
}

// checkHostNames refuses a host certificate that would name a database
// another host serves. A database's name is the server name its sessions'
// TLS is verified against, so a certificate naming it lets its holder
// answer that database's users as if it were their agent (through a proxy
// routing on that name, or with a spoofed address) and read their
// sessions. A name stays its host's while that host heartbeats, as
// registrations do (state.ErrInUse); a database moves to a new host once
// its old agent stopped.
func (s *Service) checkHostNames(hostID string, hosts []string, what string) error {
	now := time.Now()
	for _, h := range hosts {
		d, ok := s.store.Database(h)
		if !ok || d.HostID == "" || d.HostID == hostID || d.Expired(now) {
			continue
		}
		s.log.Warn("host certificate refused: it would name another host's database", "what", what, "host_id", hostID, "database", h, "served_by", d.HostID)
		return &Refusal{Status: http.StatusForbidden,
			Message: fmt.Sprintf("%s: database %s is served by host %s, so host %s cannot have a certificate naming it (a database moves to another host once its agent has stopped)", what, quote(h), d.HostID, hostID)}
	}
	return nil
}

// verifyHost checks the host certificate an agent presents for what.
func (s *Service) verifyHost(certs []*x509.Certificate, what string) (string, error) {
	if len(certs) == 0 {
		return "", &Refusal{Status: http.StatusUnauthorized, Message: what + ": present the agent's host certificate (joining with a token issues it)"}
	}
	hostID, err := s.cas.VerifyHost(certs, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return "", &Refusal{Status: http.StatusUnauthorized, Message: what + ": the host certificate is not valid: " + err.Error()}
	}
	return hostID, nil
}

// verifyAgent is verifyHost for what only agents may do: a proxy's
// certificate serves no database, so it registers none and gets no
// certificate to log in to one.
func (s *Service) verifyAgent(certs []*x509.Certificate, what string) (string, error) {
	hostID, err := s.verifyHost(certs, what)
	if err == nil && hostID == ca.ProxyHostID {
		return "", &Refusal{Status: http.StatusForbidden, Message: what + ": the certificate is a proxy's, and proxies serve no database"}
	}
	return hostID, err
}

// CheckPublicKey accepts the keys Tollgate certifies: ECDSA P-256 or
// P-384, Ed25519, RSA of 2048 bits or more.
func CheckPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA key on curve %s; want P-256 or P-384", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits; want at least 2048", k.N.BitLen())
		}
	case nil:
		return errors.New("no public key")
	default:
		return fmt.Errorf("public key of type %T; want ECDSA P-256/P-384, Ed25519 or RSA", pub)
	}
	return nil
}

// NewInvite returns a fresh invite (256 random bits, URL-safe) and the hash
// to store (InviteHash). The invite itself is shown once and never stored.
func NewInvite() (invite, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("invite: %w", err)
	}
	invite = base64.RawURLEncoding.EncodeToString(b)
	return invite, InviteHash(invite), nil
}

// InviteHash is what CREDENTIALS keeps of an invite: its hex SHA-256. The
// invite is 256 random bits, so a fast hash loses nothing.
func InviteHash(invite string) string {
	sum := sha256.Sum256([]byte(invite))
	return hex.EncodeToString(sum[:])
}

func sourceKey(src string) string {
	if src == "" {
		return "unknown"
	}
	return src
}

// clip bounds a client-supplied string before it enters an event.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func quote(s string) string { return fmt.Sprintf("%q", clip(s, 256)) }

// Auditor is where the service stores its events.
func (s *Service) Auditor() Auditor { return s.audit }
