package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/events"
)

// NewUser is what CreateUser needs.
type NewUser struct {
	Name   string
	Roles  []string
	Traits map[string][]string
	// InviteHash, when set, is stored in CREDENTIALS so the user can set a
	// password with the invite until InviteExpires. The hash is the
	// caller's (e.g. SHA-256 of a random invite); it never enters STATE.
	InviteHash    string
	InviteExpires time.Time
}

// Credentials are a user's secrets, kept in the CREDENTIALS bucket and never
// in STATE: a password hash is only as strong as the password, and STATE is
// exported to SIEMs.
type Credentials struct {
	PasswordHash  string    `json:"password_hash,omitempty"`
	InviteHash    string    `json:"invite_hash,omitempty"`
	InviteExpires time.Time `json:"invite_expires,omitzero"`
	// TOTPSecret is the base32 RFC 6238 secret of an enrolled
	// authenticator; TOTPLastStep the last time step a code was accepted
	// for, so that no code works twice.
	TOTPSecret   string `json:"totp_secret,omitempty"`
	TOTPLastStep int64  `json:"totp_last_step,omitempty"`
	// WebAuthnID is the user handle given to the user's security keys,
	// random so that it reveals nothing; WebAuthn their credentials
	// (public keys and signature counters).
	WebAuthnID []byte                `json:"webauthn_id,omitempty"`
	WebAuthn   []webauthn.Credential `json:"webauthn,omitempty"`
}

// CreateUser adds a user whose roles all exist.
func (s *Store) CreateUser(ctx context.Context, by Actor, nu NewUser) (User, error) {
	if err := ValidUserName(nu.Name); err != nil {
		return User{}, invalid("%v", err)
	}
	if err := validTraits(nu.Traits); err != nil {
		return User{}, err
	}
	if nu.InviteHash != "" && !nu.InviteExpires.After(time.Now()) {
		return User{}, invalid("user %s: invite expiry %s is not in the future", nu.Name, nu.InviteExpires.Format(time.RFC3339))
	}
	_, err := s.change(ctx, by, subject(AggUser, nu.Name), func() (events.Event, error) {
		if _, ok := s.users[nu.Name]; ok {
			return nil, fmt.Errorf("user %s: %w", nu.Name, ErrExists)
		}
		if err := s.rolesExist(nu.Roles); err != nil {
			return nil, fmt.Errorf("user %s: %w", nu.Name, err)
		}
		ev := &events.UserCreate{Name: nu.Name, UserRoles: slices.Clone(nu.Roles), Traits: cloneTraits(nu.Traits)}
		if nu.InviteHash != "" {
			ev.InviteExpires = nu.InviteExpires.UTC()
		}
		return ev, nil
	})
	if err != nil {
		return User{}, err
	}
	// The event is stored first so that a credential is never written for
	// a user that a concurrent create won; a leftover from a deleted user of
	// the same name is overwritten here.
	if err := s.putCredentials(ctx, nu.Name, Credentials{InviteHash: nu.InviteHash, InviteExpires: nu.InviteExpires.UTC()}); err != nil {
		return User{}, err
	}
	u, _ := s.User(nu.Name)
	return u, nil
}

// UpdateUser changes a user's roles, traits or lock-out with fn, which gets
// a copy of the current user and may be called again with fresher values if
// a concurrent change wins the race; fn must not have other effects. Other
// fields fn changes are ignored. No event is written when nothing changed.
func (s *Store) UpdateUser(ctx context.Context, by Actor, name string, fn func(*User) error) (User, error) {
	_, err := s.change(ctx, by, subject(AggUser, name), func() (events.Event, error) {
		cur, ok := s.users[name]
		if !ok {
			return nil, fmt.Errorf("user %s: %w", name, ErrNotFound)
		}
		u := cur.clone()
		if err := fn(&u); err != nil {
			return nil, err
		}
		if err := validTraits(u.Traits); err != nil {
			return nil, err
		}
		if !slices.Equal(u.Roles, cur.Roles) {
			if err := s.rolesExist(u.Roles); err != nil {
				return nil, fmt.Errorf("user %s: %w", name, err)
			}
		}
		if slices.Equal(u.Roles, cur.Roles) && traitsEqual(u.Traits, cur.Traits) &&
			u.LockedUntil.Equal(cur.LockedUntil) && u.LockReason == cur.LockReason {
			return nil, nil
		}
		return &events.UserUpdate{Name: name, UserRoles: u.Roles, Traits: u.Traits,
			LockedUntil: u.LockedUntil.UTC(), LockReason: u.LockReason}, nil
	})
	if err != nil {
		return User{}, err
	}
	u, _ := s.User(name)
	return u, nil
}

// DeleteUser removes a user and their credentials.
func (s *Store) DeleteUser(ctx context.Context, by Actor, name string) error {
	_, err := s.change(ctx, by, subject(AggUser, name), func() (events.Event, error) {
		if _, ok := s.users[name]; !ok {
			return nil, fmt.Errorf("user %s: %w", name, ErrNotFound)
		}
		return &events.UserDelete{Name: name}, nil
	})
	if err != nil {
		return err
	}
	if err := s.credsKV.Delete(ctx, escapeKey(name)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("state: user %s deleted, but removing credentials failed: %w", name, err)
	}
	return nil
}

// SetPassword records that the user's password was set (inviteUsed when
// with an invite, which it consumes) and stores hash in CREDENTIALS. The
// caller hashes (argon2id or bcrypt) and checks the invite or old password
// first. The event is written before the hash: if storing the hash fails,
// the audit trail shows an attempt and the old credentials no longer
// matter to anyone but a retry.
func (s *Store) SetPassword(ctx context.Context, by Actor, name, hash string, inviteUsed bool) error {
	if hash == "" {
		return invalid("user %s: empty password hash", name)
	}
	_, err := s.change(ctx, by, subject(AggUser, name), func() (events.Event, error) {
		if _, ok := s.users[name]; !ok {
			return nil, fmt.Errorf("user %s: %w", name, ErrNotFound)
		}
		return &events.UserPasswordSet{Name: name, InviteUsed: inviteUsed}, nil
	})
	if err != nil {
		return err
	}
	// A second factor outlives a password change; an invite does not.
	cur, err := s.Credentials(ctx, name)
	if err != nil {
		return err
	}
	cur.PasswordHash, cur.InviteHash, cur.InviteExpires = hash, "", time.Time{}
	return s.putCredentials(ctx, name, cur)
}

// EnrollTOTP records that the user enrolled an authenticator
// (user.mfa_add) and stores its secret in CREDENTIALS, replacing any
// earlier one; the caller checked a code of it first. step is the time
// step of that code, which cannot log in again.
func (s *Store) EnrollTOTP(ctx context.Context, by Actor, name, secret string, step int64) error {
	if secret == "" {
		return invalid("user %s: empty TOTP secret", name)
	}
	cur, err := s.Credentials(ctx, name)
	if err != nil {
		return err
	}
	// The secret is stored first: an event saying a factor is enrolled
	// whose secret was lost would lock the user out.
	cur.TOTPSecret, cur.TOTPLastStep = secret, step
	if err := s.putCredentials(ctx, name, cur); err != nil {
		return err
	}
	_, err = s.change(ctx, by, subject(AggUser, name), func() (events.Event, error) {
		if _, ok := s.users[name]; !ok {
			return nil, fmt.Errorf("user %s: %w", name, ErrNotFound)
		}
		return &events.UserMFAAdd{Name: name, Method: events.MFATOTP}, nil
	})
	return err
}

// EnrollWebAuthn adds a registered security key to the user's
// credentials and records it (user.mfa_add, method webauthn). handle is
// the user handle the key was registered with.
func (s *Store) EnrollWebAuthn(ctx context.Context, by Actor, name string, handle []byte, cred webauthn.Credential) error {
	cur, err := s.Credentials(ctx, name)
	if err != nil {
		return err
	}
	cur.WebAuthnID = handle
	cur.WebAuthn = append(cur.WebAuthn, cred)
	if err := s.putCredentials(ctx, name, cur); err != nil {
		return err
	}
	_, err = s.change(ctx, by, subject(AggUser, name), func() (events.Event, error) {
		if _, ok := s.users[name]; !ok {
			return nil, fmt.Errorf("user %s: %w", name, ErrNotFound)
		}
		return &events.UserMFAAdd{Name: name, Method: events.MFAWebAuthn}, nil
	})
	return err
}

// RemoveMFA removes the second factor named factor of user name ("totp",
// or a security key by keyName), or every factor when factor is empty
// (an administrator's reset), and records it (user.mfa_remove). keyName
// names a key as its owner sees it.
func (s *Store) RemoveMFA(ctx context.Context, by Actor, name, factor string, keyName func(webauthn.Credential) string) error {
	cur, err := s.Credentials(ctx, name)
	if err != nil {
		return err
	}
	switch {
	case factor == "":
		cur.TOTPSecret, cur.WebAuthn = "", nil
	case factor == "totp":
		if cur.TOTPSecret == "" {
			return fmt.Errorf("user %s has no authenticator app: %w", name, ErrNotFound)
		}
		cur.TOTPSecret = ""
	default:
		i := slices.IndexFunc(cur.WebAuthn, func(c webauthn.Credential) bool { return keyName(c) == factor })
		if i < 0 {
			return fmt.Errorf("user %s has no second factor %q: %w", name, factor, ErrNotFound)
		}
		cur.WebAuthn = slices.Delete(cur.WebAuthn, i, i+1)
	}
	// The event first: the projection decides which factors a login asks
	// for and accepts, so once it says removed the factor is neither; a
	// secret a failed write left behind is never read.
	_, err = s.change(ctx, by, subject(AggUser, name), func() (events.Event, error) {
		if _, ok := s.users[name]; !ok {
			return nil, fmt.Errorf("user %s: %w", name, ErrNotFound)
		}
		return &events.UserMFARemove{Name: name, Factor: factor, Reset: factor == "", TOTP: cur.TOTPSecret != "", WebAuthn: len(cur.WebAuthn) > 0}, nil
	})
	if err != nil {
		return err
	}
	return s.putCredentials(ctx, name, cur)
}

// UpdateWebAuthn stores a key's state after a sign-in (its signature
// counter, by which a cloned key shows).
func (s *Store) UpdateWebAuthn(ctx context.Context, name string, cred webauthn.Credential) error {
	cur, err := s.Credentials(ctx, name)
	if err != nil {
		return err
	}
	for i := range cur.WebAuthn {
		if bytes.Equal(cur.WebAuthn[i].ID, cred.ID) {
			cur.WebAuthn[i] = cred
			return s.putCredentials(ctx, name, cur)
		}
	}
	return fmt.Errorf("user %s: no such security key", name)
}

// ErrTOTPReused is a code of a time step already used, or being used by a
// concurrent login.
var ErrTOTPReused = errors.New("this one-time code was already used")

// UseTOTPStep marks time step as used for the user's authenticator; a step
// at or before the last one used is refused. The bucket's revision makes
// two logins racing with the same code see one success.
func (s *Store) UseTOTPStep(ctx context.Context, name string, step int64) error {
	e, err := s.credsKV.Get(ctx, escapeKey(name))
	if err != nil {
		return fmt.Errorf("state: credentials of %s: %w", name, err)
	}
	var c Credentials
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return fmt.Errorf("state: credentials of %s: %w", name, err)
	}
	if step <= c.TOTPLastStep {
		return ErrTOTPReused
	}
	c.TOTPLastStep = step
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if _, err := s.credsKV.Update(ctx, escapeKey(name), b, e.Revision()); err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return ErrTOTPReused
		}
		return fmt.Errorf("state: credentials of %s: %w", name, err)
	}
	return nil
}

// Credentials returns a user's secrets. A user without any has zero
// Credentials and no error.
func (s *Store) Credentials(ctx context.Context, name string) (Credentials, error) {
	if _, ok := s.User(name); !ok {
		return Credentials{}, fmt.Errorf("user %s: %w", name, ErrNotFound)
	}
	e, err := s.credsKV.Get(ctx, escapeKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Credentials{}, nil
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("state: credentials of %s: %w", name, err)
	}
	var c Credentials
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return Credentials{}, fmt.Errorf("state: credentials of %s: %w", name, err)
	}
	return c, nil
}

func (s *Store) putCredentials(ctx context.Context, name string, c Credentials) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if _, err := s.credsKV.Put(ctx, escapeKey(name), b); err != nil {
		return fmt.Errorf("state: store credentials of %s: %w", name, err)
	}
	return nil
}

// rolesExist checks role names against the stored and built-in roles;
// called with the projection locked.
func (p *Projection) rolesExist(names []string) error {
	var missing []string
	for i, n := range names {
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("%w: role %s listed twice", ErrInvalid, n)
		}
		if _, ok := p.roles[n]; !ok && !access.IsBuiltin(n) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: unknown role %s", ErrInvalid, strings.Join(missing, ", "))
	}
	return nil
}

func validTraits(t map[string][]string) error {
	for k := range t {
		if k == "" || strings.IndexFunc(k, unicode.IsSpace) >= 0 || strings.Contains(k, "{{") {
			return invalid("trait name %q: want a non-empty name without spaces or braces", k)
		}
	}
	return nil
}

func traitsEqual(a, b map[string][]string) bool {
	return maps.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}
