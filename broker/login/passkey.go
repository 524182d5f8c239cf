package login

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"net/http"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// BeginPasskeyLogin starts a sign-in with a passkey alone, for tg: no
// user name and no password, the key names its user (a discoverable
// credential) and must verify them (PIN or biometrics), which makes it two
// factors. The answer is the page where the key answers; the certificate
// for pub comes back sealed to b.
func (s *Service) BeginPasskeyLogin(pub crypto.PublicKey, ttl time.Duration, b Browser) (string, error) {
	if err := CheckPublicKey(pub); err != nil {
		return "", &Refusal{Status: http.StatusBadRequest, Message: "passkey login: " + err.Error()}
	}
	if ttl < 0 {
		return "", &Refusal{Status: http.StatusBadRequest, Message: "passkey login: ttl is negative"}
	}
	wa, err := s.webauthn()
	if err != nil {
		return "", err
	}
	opts, session, err := wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return "", err
	}
	ticket := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	now := s.now()
	s.asserting.Range(func(k, v any) bool {
		if p, _ := v.(waPending); now.After(p.expires) {
			s.asserting.Delete(k)
		}
		return true
	})
	s.asserting.Store(ticket, waPending{session: *session, expires: now.Add(webauthnTTL),
		browser: &browserLogin{Browser: b, pub: pub, ttl: ttl, options: opts, passkey: true}})
	return s.origin + keyLoginPath + "?ticket=" + ticket, nil
}

// BeginWebPasskey starts a passkey sign-in for the web UI: the ticket
// (kept in a cookie of the browser) and the options for
// navigator.credentials.get. LoginPasskey finishes it.
func (s *Service) BeginWebPasskey() (*WebAuthnChallenge, error) {
	wa, err := s.webauthn()
	if err != nil {
		return nil, err
	}
	opts, session, err := wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return nil, err
	}
	ticket := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	s.asserting.Store(ticket, waPending{session: *session, expires: s.now().Add(webauthnTTL),
		browser: &browserLogin{options: opts, passkey: true}})
	return &WebAuthnChallenge{Ticket: ticket, Options: opts}, nil
}

// LoginPasskey finishes a web passkey sign-in with the key's answer,
// certifying pub (the web session's key). The ticket is used once.
func (s *Service) LoginPasskey(ctx context.Context, ticket string, body []byte, pub crypto.PublicKey, meta Meta) (*Issued, error) {
	v, ok := s.asserting.LoadAndDelete(ticket)
	p, _ := v.(waPending)
	if !ok || p.browser == nil || !p.browser.passkey || p.browser.RedirectURL != "" {
		ev := &events.UserLogin{Method: events.LoginPasskey, MFA: events.MFAWebAuthn, Reason: events.LoginMFAWrong,
			SourceAddr: meta.Source, UserAgent: clip(meta.UserAgent, 200), Path: meta.Path}
		ev.Error = "unknown, expired or used passkey challenge"
		if err := s.audit.Publish(ctx, ev); err != nil {
			s.log.Error("passkey refusal not audited", "err", err)
		}
		return nil, &Refusal{Status: http.StatusUnauthorized, Reason: events.LoginMFAWrong, Detail: ev.Error,
			Message: "login: this sign-in expired or was already finished; sign in again"}
	}
	bl := *p.browser
	bl.pub = pub
	p.browser = &bl
	return s.finishPasskey(ctx, p, body, meta)
}

// finishPasskey checks a passkey's answer: the user is the one whose
// user handle the key returned, the signature must be by a key registered
// to them, and the key must have verified the user.
func (s *Service) finishPasskey(ctx context.Context, p waPending, body []byte, meta Meta) (*Issued, error) {
	ev := &events.UserLogin{Method: events.LoginPasskey, MFA: events.MFAWebAuthn, SourceAddr: meta.Source, UserAgent: clip(meta.UserAgent, 200), Path: meta.Path}
	refuse := func(r *Refusal) (*Issued, error) {
		ev.Success, ev.Error, ev.Reason = false, r.Detail, r.Reason
		if err := s.audit.Publish(ctx, ev); err != nil {
			s.log.Error("passkey refusal not audited", "user", ev.User, "reason", r.Reason, "err", err)
		}
		return nil, r
	}
	now := s.now()
	wrong := func(detail string) (*Issued, error) {
		if ev.User != "" {
			s.failed(ctx, Request{User: ev.User, Meta: meta}, true, now)
		}
		return refuse(&Refusal{Status: http.StatusUnauthorized, Reason: events.LoginMFAWrong, Detail: detail,
			Message: "login: the passkey's answer was not accepted (" + detail + "); sign in again"})
	}
	if now.After(p.expires) {
		return wrong("the sign-in expired")
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(body)
	if err != nil {
		return wrong("unreadable answer: " + errText(err))
	}
	wa, err := s.webauthn()
	if err != nil {
		return nil, err
	}
	var found state.User
	cred, err := wa.ValidateDiscoverableLogin(func(_, handle []byte) (webauthn.User, error) {
		u, creds, ok := s.userByHandle(ctx, handle)
		if !ok {
			return nil, errors.New("no user has this passkey")
		}
		found, ev.User = u, u.Name
		return waUser{name: u.Name, handle: creds.WebAuthnID, creds: creds.WebAuthn}, nil
	}, p.session, parsed)
	if err != nil {
		return wrong(errText(err))
	}
	if cred.Authenticator.CloneWarning {
		return wrong("the key's signature counter went back: it may have been cloned")
	}
	if found.LockedOut(now) {
		return refuse(&Refusal{Status: http.StatusTooManyRequests, Reason: events.LoginLocked, RetryAfter: found.LockedUntil.Sub(now),
			Detail: "locked out until " + found.LockedUntil.UTC().Format(time.RFC3339) + ": " + found.LockReason, Message: "too many failed logins, retry later"})
	}
	if err := s.store.UpdateWebAuthn(ctx, found.Name, *cred); err != nil {
		return refuse(&Refusal{Status: http.StatusServiceUnavailable, Reason: events.LoginBadRequest, Detail: "record the key's counter: " + err.Error(),
			Message: "login: the broker cannot record the key's use; try again"})
	}
	id := identity.Identity{User: found.Name, Roles: found.Roles, Traits: found.Traits}
	ev.Success, ev.Roles = true, id.Roles
	return s.issueUser(ctx, state.Actor{User: found.Name, Roles: found.Roles}, id, p.browser.pub, p.browser.ttl, events.IssueLogin, meta.Source, ev)
}

// userByHandle finds the stored user whose security keys were registered
// under handle. It reads the credentials of each user with a key: fine
// for the users of one organisation, an index when that grows.
func (s *Service) userByHandle(ctx context.Context, handle []byte) (state.User, state.Credentials, bool) {
	if len(handle) == 0 {
		return state.User{}, state.Credentials{}, false
	}
	for _, u := range s.store.Users() {
		if !u.WebAuthn {
			continue
		}
		c, err := s.store.Credentials(ctx, u.Name)
		if err == nil && len(c.WebAuthnID) > 0 && bytes.Equal(c.WebAuthnID, handle) {
			return u, c, true
		}
	}
	return state.User{}, state.Credentials{}, false
}
