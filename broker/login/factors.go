package login

import (
	"context"
	"encoding/hex"
	"net/http"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/tollgate-db/tollgate/broker/identity"
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
