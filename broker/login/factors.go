package login

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// Factor is an enrolled second factor as its owner sees it: a name to
// remove it by and its method, never its secret.
type Factor struct {
	Name   string `json:"name"`
	Method string `json:"method"`
}

// totpFactor is the name of the (single) authenticator app.
const totpFactor = "totp"

// keyName names a security key by the start of its credential id, which
// is public (the key announces it at every sign-in).
func keyName(c webauthn.Credential) string {
	id := c.ID
	if len(id) > 6 {
		id = id[:6]
	}
	return "key-" + hex.EncodeToString(id)
}

// Factors lists the caller's second factors.
func (s *Service) Factors(ctx context.Context, id identity.Identity) ([]Factor, error) {
	if _, ok := s.store.User(id.User); !ok {
		return nil, notStored(id.User)
	}
	creds, err := s.store.Credentials(ctx, id.User)
	if err != nil {
		return nil, err
	}
	out := []Factor{}
	if creds.TOTPSecret != "" {
		out = append(out, Factor{Name: totpFactor, Method: events.MFATOTP})
	}
	for _, c := range creds.WebAuthn {
		out = append(out, Factor{Name: keyName(c), Method: events.MFAWebAuthn})
	}
	return out, nil
}

func notStored(user string) *Refusal {
	return &Refusal{Status: http.StatusForbidden,
		Message: "mfa: " + user + " is not a user stored in Tollgate (single sign-on users manage their second factors with their identity provider)"}
}

// RemoveRequest removes a factor of the caller, proven fresh: a code of
// the authenticator (OTP), or a security key in the browser (Browser).
type RemoveRequest struct {
	Factor  string
	OTP     string
	Browser *Browser
	Meta
}

// RemoveFactor removes a second factor of the caller after checking one
// now: a stolen certificate alone must not strip its owner's factors. A
// code is used once; a security key answers in the browser (the refusal
// carries the page's BrowserURL) and the removal happens there.
func (s *Service) RemoveFactor(ctx context.Context, id identity.Identity, r RemoveRequest) error {
	u, ok := s.store.User(id.User)
	if !ok {
		return notStored(id.User)
	}
	fs, err := s.Factors(ctx, id)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(fs, func(f Factor) bool { return f.Name == r.Factor }) {
		names := make([]string, 0, len(fs))
		for _, f := range fs {
			names = append(names, f.Name)
		}
		return &Refusal{Status: http.StatusNotFound, Message: fmt.Sprintf("mfa rm: %s has no second factor %s (tg mfa ls lists them: %s)", id.User, quote(r.Factor), strings.Join(names, ", "))}
	}
	now := s.now()
	if wait := max(s.sources.wait(sourceKey(r.Source), now), s.users.wait(u.Name, now)); wait > 0 {
		return &Refusal{Status: http.StatusTooManyRequests, RetryAfter: wait, Message: fmt.Sprintf("too many failed second factor checks, retry in %ds", retrySeconds(wait))}
	}
	by := state.Actor{User: id.User, Roles: id.Roles}
	switch {
	case r.OTP != "" && u.TOTP:
		if ref := s.checkTOTP(ctx, Request{User: u.Name, OTP: r.OTP}, u, now); ref != nil {
			if ref.Status == http.StatusUnauthorized {
				s.failed(ctx, Request{User: u.Name, Meta: r.Meta}, true, now)
			}
			ref.Message = "mfa rm: " + trimLogin(ref.Message)
			return ref
		}
		return s.store.RemoveMFA(ctx, by, u.Name, r.Factor, keyName)
	case r.OTP != "":
		return &Refusal{Status: http.StatusBadRequest, Message: "mfa rm: a one-time code was given but no authenticator app is enrolled; confirm with the security key instead (leave out --otp)"}
	case u.WebAuthn && r.Browser != nil:
		ref := s.askKeyInBrowser(ctx, u, &browserLogin{Browser: *r.Browser, caller: id, remove: r.Factor})
		if ref.BrowserURL != "" {
			ref.Message = "mfa rm: confirm with your security key in the browser"
		}
		return ref
	default:
		return &Refusal{Status: http.StatusForbidden, Reason: events.LoginMFARequired,
			Message: "mfa rm: removing a second factor needs one checked now: give the authenticator's code (--otp=CODE), or confirm with a security key in the browser"}
	}
}
