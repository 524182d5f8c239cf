// Package identity holds who a certificate says its holder is: user, roles,
// traits and expiry. The broker writes an Identity into every certificate it
// issues; agents read it back from the verified client certificate.
package identity

import "time"

// Trait names with a meaning of their own in role templates
// ({{internal.db_users}}, {{internal.db_names}}).
const (
	TraitDBUsers = "db_users"
	TraitDBNames = "db_names"
)

// MFASession is what a per-session certificate is good for, and the
// second factor checked to issue it.
type MFASession struct {
	Database string `json:"database"`
	DBUser   string `json:"db_user"`
	// Method is the factor: totp or webauthn.
	Method string `json:"method"`
	// LoginExpires is when the login the certificate was asked with
	// ends. The certificate starts sessions for a minute; a session it
	// started may last until then (Identity.Expires), as one started with
	// the login's own certificate would.
	LoginExpires time.Time `json:"login_expires,omitzero"`
}

// Identity is what a user certificate says about its holder.
type Identity struct {
	// User is the Tollgate user name.
	User string `json:"user"`
	// Roles granted to the user, including roles from approved access
	// requests.
	Roles []string `json:"roles"`
	// Traits are named lists of values used by role templates; internal
	// traits include db_users and db_names, external ones come from SSO.
	Traits map[string][]string `json:"traits,omitempty"`
	// AccessRequests are the ids of approved requests whose roles this
	// certificate carries.
	AccessRequests []string `json:"access_requests,omitempty"`
	// MFASession, in a certificate issued for one database session after
	// a second factor (roles with require_session_mfa), says for which:
	// agents accept it for that database and database user only.
	MFASession *MFASession `json:"mfa_session,omitempty"`
	// Expires is the certificate's NotAfter, or for a per-session
	// certificate (MFASession) the end of the login it was asked with:
	// how long a session it started may last. Whether a certificate can
	// still start one is its NotAfter, which every handshake checks.
	Expires time.Time `json:"expires"`
	// Issued is the certificate's NotBefore, read from the certificate
	// and never written into it: a certificate signed before its user was
	// removed is refused even if the name is taken again.
	Issued time.Time `json:"-"`
}
