package login

import (
	"context"
	"crypto"
	"encoding/base64"
	"net/http"
	"time"

	"github.com/go-webauthn/webauthn/protocol"

	"github.com/tollgate-db/tollgate/broker/identity"
)

// The web UI's pages where a security key answers for tg, which cannot
// reach the key itself: tg opens the browser there, as for single sign-on.
const (
	keyLoginPath    = "/login/key"
	keyRegisterPath = "/mfa/key"
)

// Browser is where a ceremony run in the browser for tg sends its outcome:
// tg's loopback listener, and the secret that seals a certificate for it.
type Browser struct {
	RedirectURL string
	Secret      []byte
}

// browserLogin is what a tg login waiting for a key keeps.
type browserLogin struct {
	Browser
	pub     crypto.PublicKey
	ttl     time.Duration
	options *protocol.CredentialAssertion
	// session, for a key checked for one database session, is what the
	// certificate will be good for, and caller who asked.
	session *identity.MFASession
	caller  identity.Identity
	// remove, for a key checked to remove a factor, names the factor.
	remove string
	// passkey is a sign-in where the key names the user.
	passkey bool
}

// browserReg is a registration started by tg, waiting for the browser.
type browserReg struct {
	Browser
	id       identity.Identity
	creation *protocol.CredentialCreation
	expires  time.Time
}

// KeyLoginPage is what the browser page of a tg login shows: the user and
// the options for navigator.credentials.get. The ticket is not used up:
// LoginWebAuthnBrowser does that.
func (s *Service) KeyLoginPage(ticket string) (user string, opts *protocol.CredentialAssertion, ok bool) {
	v, ok := s.asserting.Load(ticket)
	p, _ := v.(waPending)
	if !ok || p.browser == nil || p.browser.RedirectURL == "" || s.now().After(p.expires) {
		return "", nil, false
	}
	return p.user, p.browser.options, true
}

// LoginWebAuthnBrowser finishes a tg login with the key's answer given in
// the browser: the certificate is for the key tg sent with its password,
// and Browser says where it goes (also when refused, so tg hears why).
// The ticket is used once, whatever the outcome.
func (s *Service) LoginWebAuthnBrowser(ctx context.Context, ticket string, body []byte, meta Meta) (*Issued, *Browser, error) {
	v, ok := s.asserting.LoadAndDelete(ticket)
	p, _ := v.(waPending)
	if !ok || p.browser == nil || p.browser.RedirectURL == "" {
		is, err := s.finishWebAuthn(ctx, ticket, p, false, body, nil, 0, meta)
		return is, nil, err
	}
	if p.browser.passkey {
		is, err := s.finishPasskey(ctx, p, body, meta)
		return is, &p.browser.Browser, err
	}
	is, err := s.finishWebAuthn(ctx, ticket, p, true, body, p.browser.pub, p.browser.ttl, meta)
	return is, &p.browser.Browser, err
}

// BeginWebAuthnRegistrationBrowser starts registering a security key for
// the caller (tg's user) in the browser: the answer is the page to open.
func (s *Service) BeginWebAuthnRegistrationBrowser(ctx context.Context, id identity.Identity, b Browser) (string, error) {
	creation, err := s.BeginWebAuthnRegistration(ctx, id)
	if err != nil {
		return "", err
	}
	ticket := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	now := s.now()
	s.browserRegs.Range(func(k, v any) bool {
		if r, _ := v.(browserReg); now.After(r.expires) {
			s.browserRegs.Delete(k)
		}
		return true
	})
	s.browserRegs.Store(ticket, browserReg{Browser: b, id: id, creation: creation, expires: now.Add(webauthnTTL)})
	return s.origin + keyRegisterPath + "?ticket=" + ticket, nil
}

// KeyRegisterPage is what the browser page of a tg registration shows.
func (s *Service) KeyRegisterPage(ticket string) (user string, creation *protocol.CredentialCreation, ok bool) {
	v, ok := s.browserRegs.Load(ticket)
	r, _ := v.(browserReg)
	if !ok || s.now().After(r.expires) {
		return "", nil, false
	}
	return r.id.User, r.creation, true
}

// FinishWebAuthnRegistrationBrowser enrolls the key the browser created
// for a registration tg started; the ticket is used once.
func (s *Service) FinishWebAuthnRegistrationBrowser(ctx context.Context, ticket string, body []byte) (*Browser, error) {
	v, ok := s.browserRegs.LoadAndDelete(ticket)
	r, _ := v.(browserReg)
	if !ok || s.now().After(r.expires) {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "security keys: this registration is unknown, expired or already finished; run tg mfa add again"}
	}
	return &r.Browser, s.FinishWebAuthnRegistration(ctx, r.id, body)
}
