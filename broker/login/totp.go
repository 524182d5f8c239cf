package login

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/mfa"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// enrollTTL is how long a new TOTP secret waits for its first code.
const enrollTTL = 10 * time.Minute

type enrolling struct {
	secret  string
	expires time.Time
}

// checkTOTP asks a user with an enrolled authenticator for its code, once
// the password was right: a code that is missing, wrong, or of a time step
// already used is refused, and the last two count as failed logins.
func (s *Service) checkTOTP(ctx context.Context, req Request, u state.User, now time.Time) *Refusal {
	if !u.TOTP {
		return nil
	}
	if req.OTP == "" {
		return &Refusal{Status: http.StatusForbidden, Reason: events.LoginMFARequired, Detail: "no one-time code given",
			Message: "login: user " + u.Name + " needs the one-time code of their authenticator app as well (tg login --otp=CODE, or TG_OTP)"}
	}
	creds, err := s.store.Credentials(ctx, u.Name)
	if err != nil || creds.TOTPSecret == "" {
		return &Refusal{Status: http.StatusServiceUnavailable, Reason: events.LoginBadRequest, Detail: "no TOTP secret readable",
			Message: "login: the broker cannot read the user's second factor; try again"}
	}
	step, err := mfa.CheckTOTP(creds.TOTPSecret, req.OTP, now)
	if err != nil {
		return &Refusal{Status: http.StatusUnauthorized, Reason: events.LoginMFAWrong, Detail: err.Error(), Message: "login: " + err.Error()}
	}
	if err := s.store.UseTOTPStep(ctx, u.Name, step); err != nil {
		if errors.Is(err, state.ErrTOTPReused) {
			return &Refusal{Status: http.StatusUnauthorized, Reason: events.LoginMFAReused, Detail: "code of a time step already used",
				Message: "login: this one-time code was already used; wait for the next one"}
		}
		return &Refusal{Status: http.StatusServiceUnavailable, Reason: events.LoginBadRequest, Detail: "record the code's use: " + err.Error(),
			Message: "login: the broker cannot record the code's use; try again"}
	}
	return nil
}

// BeginTOTP makes a new TOTP secret for the caller, shown to them once and
// kept here until ConfirmTOTP proves their authenticator has it. Only
// users stored in the broker (password logins) enroll: single sign-on
// leaves the second factor to the identity provider.
func (s *Service) BeginTOTP(id identity.Identity) (secret, url string, err error) {
	if _, ok := s.store.User(id.User); !ok {
		return "", "", &Refusal{Status: http.StatusForbidden,
			Message: "mfa: " + id.User + " is not a user stored in Tollgate (single sign-on users enroll a second factor with their identity provider)"}
	}
	secret, url, err = mfa.NewTOTP("Tollgate", id.User)
	if err != nil {
		return "", "", err
	}
	s.enrolling.Store(id.User, enrolling{secret: secret, expires: s.now().Add(enrollTTL)})
	return secret, url, nil
}

// ConfirmTOTP checks a code of the secret BeginTOTP gave the caller and
// enrolls it (user.mfa_add); from then on a password login needs a code.
func (s *Service) ConfirmTOTP(ctx context.Context, id identity.Identity, code string) error {
	v, ok := s.enrolling.Load(id.User)
	e, _ := v.(enrolling)
	if !ok || s.now().After(e.expires) {
		return &Refusal{Status: http.StatusBadRequest, Message: "mfa: no enrollment in progress, or it expired; start again with tg mfa add"}
	}
	step, err := mfa.CheckTOTP(e.secret, code, s.now())
	if err != nil {
		return &Refusal{Status: http.StatusBadRequest, Message: "mfa: " + err.Error() + "; check the authenticator's clock and try the next code"}
	}
	if err := s.store.EnrollTOTP(ctx, state.Actor{User: id.User, Roles: id.Roles}, id.User, e.secret, step); err != nil {
		return err
	}
	s.enrolling.Delete(id.User)
	return nil
}

// withholdMFA splits roles into those a login without a second factor
// gets and those it does not: roles with require_mfa, unless proven (the
// roles of a certificate that got them with a factor) holds them.
func (s *Service) withholdMFA(roles, proven []string) (kept, withheld []string) {
	resolved, _ := s.store.ResolveRoles(roles)
	need := map[string]bool{}
	for _, r := range resolved {
		if r.RequiresMFA() && !slices.Contains(proven, r.Name()) {
			need[r.Name()] = true
		}
	}
	if len(need) == 0 {
		return roles, nil
	}
	kept = []string{}
	for _, r := range roles {
		if need[r] {
			withheld = append(withheld, r)
		} else {
			kept = append(kept, r)
		}
	}
	return kept, withheld
}
