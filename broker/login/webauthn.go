package login

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// webauthnTTL bounds a registration or a sign-in from its challenge to
// the key's answer.
const webauthnTTL = 5 * time.Minute

// WebAuthnChallenge is what a browser needs to sign in with a security
// key once the password was right: the options for
// navigator.credentials.get and the ticket that names the attempt.
type WebAuthnChallenge struct {
	Ticket  string
	Options *protocol.CredentialAssertion
}

type waPending struct {
	user    string
	session webauthn.SessionData
	handle  []byte
	expires time.Time
	// browser is set for a tg login finished in the browser: the key to
	// certify and where the answer goes.
	browser *browserLogin
}

// waUser is a user as go-webauthn sees it.
type waUser struct {
	name   string
	handle []byte
	creds  []webauthn.Credential
}

func (u waUser) WebAuthnID() []byte                         { return u.handle }
func (u waUser) WebAuthnName() string                       { return u.name }
func (u waUser) WebAuthnDisplayName() string                { return u.name }
func (u waUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

// relyingParty is the WebAuthn relying party of origin
// (https://HOST:PORT, the proxy's public address): the RP id is its host,
// so a key registered here answers no other site.
func relyingParty(origin string) (*webauthn.WebAuthn, error) {
	if origin == "" {
		return nil, nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return nil, fmt.Errorf("origin %q: want https://HOST:PORT", origin)
	}
	return webauthn.New(&webauthn.Config{RPID: u.Hostname(), RPDisplayName: "Tollgate", RPOrigins: []string{origin}})
}

func (s *Service) webauthn() (*webauthn.WebAuthn, error) {
	if s.wa == nil {
		return nil, &Refusal{Status: http.StatusServiceUnavailable, Message: "security keys: the broker has no public address to register them for (proxy.public_addr)"}
	}
	return s.wa, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return b
}

// BeginWebAuthnRegistration starts registering a security key for the
// caller: the options for navigator.credentials.create. As for TOTP, only
// users stored in Tollgate register keys.
func (s *Service) BeginWebAuthnRegistration(ctx context.Context, id identity.Identity) (*protocol.CredentialCreation, error) {
	wa, err := s.webauthn()
	if err != nil {
		return nil, err
	}
	if _, ok := s.store.User(id.User); !ok {
		return nil, &Refusal{Status: http.StatusForbidden,
			Message: "security keys: " + id.User + " is not a user stored in Tollgate (single sign-on users enroll a second factor with their identity provider)"}
	}
	creds, err := s.store.Credentials(ctx, id.User)
	if err != nil {
		return nil, err
	}
	handle := creds.WebAuthnID
	if len(handle) == 0 {
		handle = randomBytes(32)
	}
	u := waUser{name: id.User, handle: handle, creds: creds.WebAuthn}
	var exclude []protocol.CredentialDescriptor
	for _, c := range creds.WebAuthn {
		exclude = append(exclude, c.Descriptor())
	}
	// A key that can keep the credential (a passkey) is asked to, so
	// that it can sign in without a user name (BeginPasskeyLogin).
	creation, session, err := wa.BeginRegistration(u, webauthn.WithExclusions(exclude),
		webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementPreferred))
	if err != nil {
		return nil, fmt.Errorf("security keys: %w", err)
	}
	s.registering.Store(id.User, waPending{user: id.User, session: *session, handle: handle, expires: s.now().Add(webauthnTTL)})
	return creation, nil
}

// FinishWebAuthnRegistration checks the browser's answer (JSON of the
// PublicKeyCredential) to the caller's registration and enrolls the key
// (user.mfa_add, method webauthn).
func (s *Service) FinishWebAuthnRegistration(ctx context.Context, id identity.Identity, body []byte) error {
	wa, err := s.webauthn()
	if err != nil {
		return err
	}
	v, ok := s.registering.LoadAndDelete(id.User)
	p, _ := v.(waPending)
	if !ok || s.now().After(p.expires) {
		return &Refusal{Status: http.StatusBadRequest, Message: "security keys: no registration in progress, or it expired; start again"}
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(body)
	if err != nil {
		return &Refusal{Status: http.StatusBadRequest, Message: "security keys: the browser's answer cannot be read: " + errText(err)}
	}
	creds, err := s.store.Credentials(ctx, id.User)
	if err != nil {
		return err
	}
	cred, err := wa.CreateCredential(waUser{name: id.User, handle: p.handle, creds: creds.WebAuthn}, p.session, parsed)
	if err != nil {
		return &Refusal{Status: http.StatusBadRequest, Message: "security keys: the key's answer is not valid: " + errText(err)}
	}
	return s.store.EnrollWebAuthn(ctx, state.Actor{User: id.User, Roles: id.Roles}, id.User, p.handle, *cred)
}

// askWebAuthn answers a right password of a user with a security key:
// the login waits for the key, under a ticket used once.
func (s *Service) askWebAuthn(ctx context.Context, u state.User, req Request) *Refusal {
	refused := func(detail string) *Refusal {
		return &Refusal{Status: http.StatusServiceUnavailable, Reason: events.LoginBadRequest, Detail: detail,
			Message: "login: the broker cannot ask for the user's security key; try again"}
	}
	wa, err := s.webauthn()
	if err != nil {
		return refused("no relying party: no public address")
	}
	creds, err := s.store.Credentials(ctx, u.Name)
	if err != nil || len(creds.WebAuthn) == 0 {
		return refused("no security key readable")
	}
	opts, session, err := wa.BeginLogin(waUser{name: u.Name, handle: creds.WebAuthnID, creds: creds.WebAuthn})
	if err != nil {
		return refused("begin: " + err.Error())
	}
	ticket := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	// Challenges never answered are dropped here, so that abandoned
	// sign-ins do not pile up.
	now := s.now()
	s.asserting.Range(func(k, v any) bool {
		if p, _ := v.(waPending); now.After(p.expires) {
			s.asserting.Delete(k)
		}
		return true
	})
	p := waPending{user: u.Name, session: *session, expires: s.now().Add(webauthnTTL)}
	if req.Browser != nil {
		p.browser = &browserLogin{Browser: *req.Browser, pub: req.PublicKey, ttl: req.TTL, options: opts}
		s.asserting.Store(ticket, p)
		return &Refusal{Status: http.StatusForbidden, Reason: events.LoginMFARequired, Detail: "security key asked for in the browser",
			Message:    "login: user " + u.Name + " signs in with their security key as well: finish in the browser",
			BrowserURL: s.origin + keyLoginPath + "?ticket=" + ticket}
	}
	s.asserting.Store(ticket, p)
	return &Refusal{Status: http.StatusForbidden, Reason: events.LoginMFARequired, Detail: "security key asked for",
		Message:  "login: user " + u.Name + " signs in with their security key as well (in the web UI, or with tg login, which opens the browser for it)",
		WebAuthn: &WebAuthnChallenge{Ticket: ticket, Options: opts}}
}

// LoginWebAuthn finishes the sign-in that askWebAuthn started: the key's
// answer (JSON of the PublicKeyCredential) must sign the ticket's
// challenge with a key registered to the user. The ticket is used once,
// whatever the outcome; a key whose signature counter went back (a
// cloned key) is refused.
func (s *Service) LoginWebAuthn(ctx context.Context, ticket string, body []byte, pub crypto.PublicKey, ttl time.Duration, meta Meta) (*Issued, error) {
	v, ok := s.asserting.LoadAndDelete(ticket)
	p, _ := v.(waPending)
	// A tg login's ticket is finished only for the key tg sent.
	ok = ok && p.browser == nil
	return s.finishWebAuthn(ctx, ticket, p, ok, body, pub, ttl, meta)
}

func (s *Service) finishWebAuthn(ctx context.Context, ticket string, p waPending, ok bool, body []byte, pub crypto.PublicKey, ttl time.Duration, meta Meta) (*Issued, error) {
	ev := &events.UserLogin{Method: events.LoginPassword, MFA: events.MFAWebAuthn, SourceAddr: meta.Source, UserAgent: clip(meta.UserAgent, 200), Path: meta.Path}
	forSession := p.browser != nil && p.browser.session != nil
	if forSession || (p.browser != nil && p.browser.remove != "") {
		ev.Method = events.LoginSessionMFA
	}
	ev.User = p.user
	refuse := func(r *Refusal) (*Issued, error) {
		ev.Success, ev.Error, ev.Reason = false, r.Detail, r.Reason
		if err := s.audit.Publish(ctx, ev); err != nil {
			s.log.Error("login refusal not audited", "user", ev.User, "reason", r.Reason, "err", err)
		}
		return nil, r
	}
	now := s.now()
	if ticket == "" || !ok || now.After(p.expires) {
		return refuse(&Refusal{Status: http.StatusUnauthorized, Reason: events.LoginMFAWrong, Detail: "unknown, expired or used security key challenge",
			Message: "login: this sign-in expired or was already finished; sign in again"})
	}
	removing := p.browser != nil && p.browser.remove != ""
	if err := CheckPublicKey(pub); err != nil && !removing {
		return refuse(&Refusal{Status: http.StatusBadRequest, Message: "login: " + err.Error(), Reason: events.LoginBadRequest, Detail: err.Error()})
	}
	u, known := s.store.User(p.user)
	if !known {
		return refuse(&Refusal{Status: http.StatusUnauthorized, Reason: events.LoginUnknownUser, Detail: "user removed during the sign-in", Message: msgWrongPassword})
	}
	if u.LockedOut(now) {
		return refuse(&Refusal{Status: http.StatusTooManyRequests, Reason: events.LoginLocked, RetryAfter: u.LockedUntil.Sub(now),
			Detail: "locked out until " + u.LockedUntil.UTC().Format(time.RFC3339) + ": " + u.LockReason, Message: "too many failed logins, retry later"})
	}
	wrong := func(detail string) (*Issued, error) {
		s.failed(ctx, Request{User: u.Name, Meta: meta}, true, now)
		return refuse(&Refusal{Status: http.StatusUnauthorized, Reason: events.LoginMFAWrong, Detail: detail,
			Message: "login: the security key's answer was not accepted (" + detail + "); sign in again"})
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(body)
	if err != nil {
		return wrong("unreadable answer: " + errText(err))
	}
	creds, err := s.store.Credentials(ctx, u.Name)
	if err != nil {
		return refuse(&Refusal{Status: http.StatusServiceUnavailable, Reason: events.LoginBadRequest, Detail: "credentials store: " + err.Error(),
			Message: "login: the broker cannot read the user's security keys; try again"})
	}
	wa, err := s.webauthn()
	if err != nil {
		return nil, err
	}
	cred, err := wa.ValidateLogin(waUser{name: u.Name, handle: creds.WebAuthnID, creds: creds.WebAuthn}, p.session, parsed)
	if err != nil {
		return wrong(errText(err))
	}
	if cred.Authenticator.CloneWarning {
		return wrong("the key's signature counter went back: it may have been cloned")
	}
	if err := s.store.UpdateWebAuthn(ctx, u.Name, *cred); err != nil {
		return refuse(&Refusal{Status: http.StatusServiceUnavailable, Reason: events.LoginBadRequest, Detail: "record the key's counter: " + err.Error(),
			Message: "login: the broker cannot record the key's use; try again"})
	}
	if forSession {
		return s.issueSession(ctx, p.browser.caller, *p.browser.session, pub, meta)
	}
	if p.browser != nil && p.browser.remove != "" {
		// A removal answers no certificate: the browser tells tg it is
		// done, and tg asks the broker's list.
		c := p.browser.caller
		return nil, s.store.RemoveMFA(ctx, state.Actor{User: c.User, Roles: c.Roles}, u.Name, p.browser.remove, keyName)
	}
	id := identity.Identity{User: u.Name, Roles: u.Roles, Traits: u.Traits}
	ev.Success, ev.Roles = true, id.Roles
	return s.issueUser(ctx, state.Actor{User: u.Name, Roles: u.Roles}, id, pub, ttl, events.IssueLogin, meta.Source, ev)
}

// errText is go-webauthn's error with its details, which say what was
// wrong (origin, challenge, signature…).
func errText(err error) string {
	if pe, ok := err.(*protocol.Error); ok && pe.DevInfo != "" {
		return clip(pe.Details+": "+pe.DevInfo, 300)
	}
	return clip(err.Error(), 300)
}
