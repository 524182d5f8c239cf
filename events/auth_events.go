package events

import "time"

// Events of authentication: logins (password, invite, certificate) and the
// certificates the authorities issue. They are published to AUDIT (subject
// audit.<cluster>._.<type>): they change no state, but every one of them is
// something an auditor wants to see, refusals most of all.
//
// No secret enters these events: not the password, not the invite, not a
// private key. A failed login records why it failed in reason (wrong
// password, unknown user, …) even though the client is only told that the
// user name or password was wrong.

func init() {
	RegisterOutcome[UserLogin]("user.login", "TGAU001I", "TGAU001W",
		"Someone logged in or was refused: with a password, an invite or a user certificate; a refusal says why.")
	Register[CertIssue]("cert.issue", "TGAU002I",
		"A certificate authority issued a certificate: to whom, why, its serial number and expiry.")
}

// Login methods (UserLogin.Method).
const (
	LoginPassword    = "password"
	LoginInvite      = "invite"
	LoginCertificate = "certificate"
	// LoginOIDC is a single sign-on through an OpenID Connect provider;
	// UserLogin.Connector names it.
	LoginOIDC = "oidc"
	// LoginSAML is a single sign-on through a SAML 2.0 identity provider;
	// UserLogin.Connector names it.
	LoginSAML = "saml"
	// LoginSessionMFA is the check of a second factor for one database
	// session, by the holder of a user certificate.
	LoginSessionMFA = "session_mfa"
	// LoginPasskey is a sign-in with a passkey alone: the key names the
	// user (a discoverable credential) and verified them (PIN or
	// biometrics), two factors in one.
	LoginPasskey = "passkey"
)

// Login failure reasons (UserLogin.Reason). The client never learns which
// of the password reasons applied; the audit trail does.
const (
	LoginUnknownUser     = "unknown_user"
	LoginWrongPassword   = "wrong_password"
	LoginNoPassword      = "no_password"
	LoginInviteInvalid   = "invite_invalid"
	LoginInviteExpired   = "invite_expired"
	LoginInviteUsed      = "invite_used"
	LoginWeakPassword    = "weak_password"
	LoginRateLimited     = "rate_limited"
	LoginLocked          = "locked"
	LoginCertExpired     = "cert_expired"
	LoginCertNotYetValid = "cert_not_yet_valid"
	LoginCertUntrusted   = "cert_untrusted"
	LoginCertAltered     = "cert_altered"
	LoginCertInvalid     = "cert_invalid"
	LoginNoCert          = "no_cert"
	LoginBadRequest      = "bad_request"
	// Single sign-on refusals.
	LoginSSOUnknownConnector = "sso_unknown_connector"
	LoginSSOBadState         = "sso_bad_state"
	LoginSSOProviderError    = "sso_provider_error"
	LoginSSOCodeRejected     = "sso_code_rejected"
	LoginSSOBadToken         = "sso_bad_token"
	LoginSSOBadNonce         = "sso_bad_nonce"
	LoginSSONoUsername       = "sso_no_username"
	LoginSSONoRole           = "sso_no_role"
	// SAML refusals: the response's signature is missing or not the
	// identity provider's, its time window has passed (or not begun), it
	// was issued for another service provider, or it answers no request
	// this browser made.
	LoginSSOBadSignature  = "sso_bad_signature"
	LoginSSOExpired       = "sso_expired"
	LoginSSOWrongAudience = "sso_wrong_audience"
	LoginSSOBadRequestID  = "sso_bad_request_id"
	// Second-factor refusals: the password was right.
	LoginMFARequired = "mfa_required"
	LoginMFAWrong    = "mfa_wrong"
	LoginMFAReused   = "mfa_reused"
)

// UserLogin records one authentication attempt. The envelope's user is the
// name that was given (which may name no user), its roles the user's roles
// on success.
type UserLogin struct {
	Envelope
	Status
	Method string `json:"method" jsonschema:"enum=password,enum=invite,enum=certificate,enum=oidc,enum=saml,enum=session_mfa,enum=passkey,description=How the client authenticated: password, invite (first login, sets the password), certificate (mTLS), oidc or saml (single sign-on), session_mfa (a second factor for one database session, over a certificate), passkey (a discoverable security key with user verification, no user name or password)"`
	// Connector names the single sign-on connector of an oidc or saml login.
	Connector string `json:"connector,omitempty" jsonschema:"description=Single sign-on connector used"`
	// MFA names the second factor checked, empty when none was.
	MFA string `json:"mfa,omitempty" jsonschema:"enum=totp,enum=webauthn,enum=provider,description=Second factor used at login: totp, webauthn (a security key or passkey), or provider (the identity provider says it checked one); empty: none"`
	// WithheldRoles are roles of the user that require a second factor
	// (require_mfa) and were left out of the certificate because none was
	// used.
	WithheldRoles []string `json:"withheld_roles,omitempty" jsonschema:"description=Roles left out of the certificate: they require a second factor and none was used"`
	// Reason is a stable code for a refusal; Status.Error says it in words.
	Reason     string `json:"reason,omitempty" jsonschema:"enum=unknown_user,enum=wrong_password,enum=no_password,enum=invite_invalid,enum=invite_expired,enum=invite_used,enum=weak_password,enum=rate_limited,enum=locked,enum=cert_expired,enum=cert_not_yet_valid,enum=cert_untrusted,enum=cert_altered,enum=cert_invalid,enum=no_cert,enum=bad_request,enum=sso_unknown_connector,enum=sso_bad_state,enum=sso_provider_error,enum=sso_code_rejected,enum=sso_bad_token,enum=sso_bad_nonce,enum=sso_no_username,enum=sso_no_role,enum=sso_bad_signature,enum=sso_expired,enum=sso_wrong_audience,enum=sso_bad_request_id,enum=mfa_required,enum=mfa_wrong,enum=mfa_reused,description=Why the login was refused"`
	SourceAddr string `json:"source_addr,omitempty" jsonschema:"description=Client IP address as the API saw it"`
	UserAgent  string `json:"user_agent,omitempty" jsonschema:"description=Client program and version"`
	// Path is the API operation that was asked for.
	Path string `json:"path,omitempty" jsonschema:"description=API path of the request"`
}

// Why a certificate was issued (CertIssue.Purpose).
const (
	IssueLogin   = "login"
	IssueReissue = "reissue"
	IssueJoin    = "join"
	IssueSign    = "sign"
	// IssueAgent is a db-client certificate an agent on another machine
	// asked for with its host certificate, to log in to a database.
	IssueAgent = "agent"
	// IssueRenew is a host certificate an agent renewed with its current
	// one (for new names, or before it expires).
	IssueRenew = "renew"
	// IssueSessionMFA is a user certificate for one database session,
	// issued after a second factor (roles with require_session_mfa).
	IssueSessionMFA = "session_mfa"
)

// CertIssue records a certificate signed by one of the authorities. The
// envelope's user and roles say who asked for it.
type CertIssue struct {
	Envelope
	CAType     string              `json:"ca_type" jsonschema:"enum=user,enum=host,enum=db,enum=db-client,description=Authority that signed"`
	Purpose    string              `json:"purpose" jsonschema:"enum=login,enum=reissue,enum=join,enum=sign,enum=agent,enum=renew,enum=session_mfa,description=Why it was issued"`
	Subject    string              `json:"subject" jsonschema:"description=Common name: the user, host id, database host or database user"`
	Serial     string              `json:"serial" jsonschema:"description=Serial number in hexadecimal"`
	NotAfter   time.Time           `json:"not_after" jsonschema:"description=When the certificate expires"`
	CertRoles  []string            `json:"cert_roles,omitempty" jsonschema:"description=Roles the certificate carries (user certificates)"`
	CertTraits map[string][]string `json:"cert_traits,omitempty" jsonschema:"description=Traits the certificate carries (user certificates)"`
	Hosts      []string            `json:"hosts,omitempty" jsonschema:"description=DNS names and IP addresses of the certificate (host and database certificates)"`
	SourceAddr string              `json:"source_addr,omitempty" jsonschema:"description=Client IP address, when issued over the API"`
	// MFA, DBService and DBUser describe a per-session certificate
	// (purpose session_mfa): the factor checked and what it is good for.
	MFA       string `json:"mfa,omitempty" jsonschema:"enum=totp,enum=webauthn,description=Second factor checked to issue a per-session certificate"`
	DBService string `json:"db_service,omitempty" jsonschema:"description=Database a per-session certificate is good for"`
	DBUser    string `json:"db_user,omitempty" jsonschema:"description=Database user a per-session certificate is good for"`
}
