// Package api is the broker's public HTTPS API as its clients see it: the
// paths, the JSON bodies, and a Client. The server side is broker/apiserver.
//
// Every request and response is JSON. Errors come back with an HTTP status
// and {"error": "…"}; a refusal for too many failed logins is 429 with a
// Retry-After header. Paths:
//
//	POST   /v1/login                 user, password, invite?, public key → user certificate
//	POST   /v1/login/passkey         public key, loopback URL, secret → URL of the page where a passkey signs in
//	POST   /v1/join                  join token, host id, public key → host certificate (agents)
//	POST   /v1/agent/db-client       mTLS host certificate, database, db user, public key → db-client certificate
//	POST   /v1/agent/register        mTLS host certificate, databases → their registrations (agents)
//	POST   /v1/agent/renew           mTLS host certificate, hosts, public key → fresh host certificate
//	POST   /v1/reissue               mTLS user certificate, public key → fresh certificate
//	GET    /v1/whoami                mTLS → the identity the broker sees
//	GET    /v1/databases             mTLS → databases the caller's roles can reach
//	GET    /v1/admin/users           mTLS + editor role, and the rest of /v1/admin:
//	POST   /v1/admin/users           add a user, answer with a one-time invite
//	DELETE /v1/admin/users/{name}
//	POST   /v1/admin/users/{name}/reset-mfa   remove every second factor of the user
//	GET    /v1/admin/roles           built-in and stored roles
//	POST   /v1/admin/roles           create or replace roles from YAML
//	GET    /v1/admin/tokens          join tokens (ids only)
//	POST   /v1/admin/tokens          a new join token, shown once
//	GET    /v1/admin/databases       every registered database
//	POST   /v1/admin/sign/identity   public key → user certificate for an identity file
//	POST   /v1/admin/sign/db         hosts → database server certificate, key and client CA
//	GET    /v1/admin/sso             single sign-on connectors (never their secrets)
//	POST   /v1/admin/sso             add or replace connectors from YAML
//	DELETE /v1/admin/sso/{name}
//	POST   /v1/mfa/totp              mTLS → a new TOTP secret and its otpauth:// URL, shown once
//	POST   /v1/mfa/totp/confirm      mTLS, a code of that secret → enrolled
//	GET    /v1/mfa                   mTLS → the caller's second factors (names and methods)
//	POST   /v1/mfa/remove            mTLS, factor name, code or loopback URL → the factor removed
//	POST   /v1/mfa/session           mTLS, database, db user, public key, code or loopback URL → certificate for that session
//	POST   /v1/mfa/webauthn          mTLS, loopback URL, secret → URL of the page that registers a security key
//	POST   /v1/sso/login             connector, public key, loopback URL, secret → URL for the browser
//
// Outside /v1, for browsers: GET /sso/oidc/{name}/login starts a single
// sign-on and GET /sso/oidc/{name}/callback is where the provider returns.
package api

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/events"
)

// Paths of the API.
const (
	PathLogin          = "/v1/login"
	PathJoin           = "/v1/join"
	PathAgentDBClient  = "/v1/agent/db-client"
	PathAgentRenew     = "/v1/agent/renew"
	PathAgentRegister  = "/v1/agent/register"
	PathReissue        = "/v1/reissue"
	PathWhoami         = "/v1/whoami"
	PathDatabases      = "/v1/databases"
	PathAdminUsers     = "/v1/admin/users"
	PathAdminRoles     = "/v1/admin/roles"
	PathAdminTokens    = "/v1/admin/tokens"
	PathAdminDatabases = "/v1/admin/databases"
	PathAdminSignID    = "/v1/admin/sign/identity"
	PathAdminSignDB    = "/v1/admin/sign/db"
	PathAdminSSO       = "/v1/admin/sso"
	PathSSOLogin       = "/v1/sso/login"
	PathMFATOTP        = "/v1/mfa/totp"
	PathMFATOTPConfirm = "/v1/mfa/totp/confirm"
	PathMFAWebAuthn    = "/v1/mfa/webauthn"
	PathMFA            = "/v1/mfa"
	PathMFASession     = "/v1/mfa/session"
	PathMFARemove      = "/v1/mfa/remove"
	PathLoginPasskey   = "/v1/login/passkey"
)

// HeaderEmptyReason tells, on an empty answer of PathDatabases, why the
// user sees no database: one of the Empty values.
const HeaderEmptyReason = "Tollgate-Empty-Reason"

// Why a user's list of databases is empty.
const (
	EmptyNoneRegistered = "none-registered" // no agent has registered a database
	EmptyNoneAllowed    = "none-allowed"    // databases exist but no role of the user allows one
	EmptyNoneLive       = "none-live"       // the allowed databases' agents stopped sending heartbeats
)

// MaxBody bounds request and response bodies.
const MaxBody = 1 << 20

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
	// RetryAfterSeconds is set on 429 responses.
	RetryAfterSeconds int `json:"retry_after_seconds,omitempty"`
	// BrowserURL, on a login refused for want of a security key, is the
	// page where the key answers (the login asked for a loopback return).
	BrowserURL string `json:"browser_url,omitempty"`
}

// LoginRequest asks for a user certificate with a password. With Invite,
// the password is set first (first login); the invite is then used up.
type LoginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
	Invite   string `json:"invite,omitempty"`
	// OTP is the code of the user's authenticator app, once one is
	// enrolled.
	OTP string `json:"otp,omitempty"`
	// PublicKey is the PEM "PUBLIC KEY" (PKIX) of the key the client
	// generated; the private key never leaves the client.
	PublicKey string `json:"public_key"`
	// TTL asks for a shorter certificate than the default (12h); the
	// roles' max_session_ttl caps it.
	TTL Duration `json:"ttl,omitempty"`
	// RedirectURL and Secret, as in SSOLoginRequest, let a user whose
	// second factor is a security key finish in the browser: the refusal
	// names the page to open (Error.BrowserURL), and the certificate comes
	// back sealed to tg's loopback listener.
	RedirectURL string `json:"redirect_url,omitempty"`
	Secret      string `json:"secret,omitempty"`
}

// Factor is an enrolled second factor: its name and method, never its
// secret.
type Factor struct {
	Name   string `json:"name"`
	Method string `json:"method"`
}

// SessionCertRequest asks for a certificate for one database session
// (roles with require_session_mfa) with a second factor: OTP, or, with
// RedirectURL and Secret, a security key in the browser (the refusal's
// Error.BrowserURL names the page; the certificate comes back sealed).
type SessionCertRequest struct {
	Database    string `json:"database"`
	DBUser      string `json:"db_user"`
	PublicKey   string `json:"public_key"`
	OTP         string `json:"otp,omitempty"`
	RedirectURL string `json:"redirect_url,omitempty"`
	Secret      string `json:"secret,omitempty"`
}

// RemoveFactorRequest removes a second factor of the caller, after a
// factor checked now: OTP, or, with RedirectURL and Secret, a security
// key in the browser (the refusal's Error.BrowserURL names the page).
type RemoveFactorRequest struct {
	Factor      string `json:"factor"`
	OTP         string `json:"otp,omitempty"`
	RedirectURL string `json:"redirect_url,omitempty"`
	Secret      string `json:"secret,omitempty"`
}

// PasskeyLoginRequest starts a sign-in with a passkey alone: the key
// names the user. The answer is the page to open (BrowserResponse); the
// certificate for PublicKey comes back sealed to RedirectURL.
type PasskeyLoginRequest struct {
	PublicKey   string   `json:"public_key"`
	RedirectURL string   `json:"redirect_url"`
	Secret      string   `json:"secret"`
	TTL         Duration `json:"ttl,omitempty"`
}

// BrowserRequest asks for a ceremony tg cannot run itself (a security
// key's) to run in the browser, the outcome sent to RedirectURL.
type BrowserRequest struct {
	RedirectURL string `json:"redirect_url"`
	Secret      string `json:"secret"` // base64url of 32 random bytes
}

// BrowserResponse is the URL of the page to open.
type BrowserResponse struct {
	URL string `json:"url"`
}

// Certificate is an issued user or host certificate with the CAs a client
// needs: the user CA (what the certificate chains to) and the host CA (what
// the proxy and agents present).
type Certificate struct {
	CertPEM   string `json:"cert_pem"`
	UserCAPEM string `json:"user_ca_pem"`
	HostCAPEM string `json:"host_ca_pem"`
	// DBCAPEM is the db CA, which signs database server certificates: what
	// a joining agent verifies databases with by default.
	DBCAPEM  string            `json:"db_ca_pem,omitempty"`
	Identity identity.Identity `json:"identity"`
	// WithheldRoles are roles of the user left out of the certificate:
	// they require a second factor (require_mfa) and the login used none.
	WithheldRoles []string `json:"withheld_roles,omitempty"`
}

// JoinRequest exchanges a join token for a host certificate.
type JoinRequest struct {
	Token     string   `json:"token"`
	HostID    string   `json:"host_id"`
	Hosts     []string `json:"hosts,omitempty"`
	PublicKey string   `json:"public_key"`
}

// DBClientRequest is an agent on another machine asking, with its host
// certificate (mTLS), for the certificate it presents to Database as
// DBUser. The CA key stays with the broker, which signs only for databases
// registered to the agent's host id.
type DBClientRequest struct {
	Database  string   `json:"database"`
	DBUser    string   `json:"db_user"`
	PublicKey string   `json:"public_key"`
	TTL       Duration `json:"ttl,omitempty"`
}

// RenewHostRequest is an agent asking, with its current host certificate
// (mTLS), for a fresh one valid for Hosts.
type RenewHostRequest struct {
	Hosts     []string `json:"hosts,omitempty"`
	PublicKey string   `json:"public_key"`
}

// RegisterRequest is an agent on another machine registering the
// databases it serves, with its host certificate (mTLS): the host id is
// the certificate's, never the body's.
type RegisterRequest struct {
	Databases []RegisterDatabase `json:"databases"`
}

// RegisterDatabase is one database an agent serves.
type RegisterDatabase struct {
	Name     string            `json:"name"`
	Protocol string            `json:"protocol"`
	URI      string            `json:"uri"`
	Labels   map[string]string `json:"labels,omitempty"`
	// AgentAddr is where clients reach the agent (host:port).
	AgentAddr string `json:"agent_addr"`
	// HeartbeatTTL is how long the database stays live without a
	// heartbeat.
	HeartbeatTTL Duration `json:"heartbeat_ttl,omitempty"`
}

// DBClientCertificate is an issued db-client certificate.
type DBClientCertificate struct {
	CertPEM string `json:"cert_pem"`
}

// ReissueRequest asks for a fresh certificate for the caller's own user,
// with the roles and traits the broker holds now.
type ReissueRequest struct {
	PublicKey string   `json:"public_key"`
	TTL       Duration `json:"ttl,omitempty"`
}

// Database is one registered database.
type Database struct {
	Name     string            `json:"name"`
	Protocol string            `json:"protocol"`
	URI      string            `json:"uri"`
	Labels   map[string]string `json:"labels,omitempty"`
	HostID   string            `json:"host_id,omitempty"`
	// AgentAddr is where clients reach the agent (host:port); tg dials it
	// with the database name as TLS server name (SNI).
	AgentAddr string `json:"agent_addr,omitempty"`
	// Live is false once the agent's heartbeats stopped.
	Live bool `json:"live"`
	// Online says whether a client can reach the database now: for an
	// agent behind proxies, whether some proxy holds its tunnel (Proxies
	// names them); else whether its heartbeats come.
	Online        bool      `json:"online"`
	Proxies       []string  `json:"proxies,omitempty"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	// SessionMFA, in GET /v1/databases, says a role of the caller needs a
	// second factor for each session (require_session_mfa): tg asks for a
	// per-session certificate (PathMFASession) first.
	SessionMFA bool `json:"session_mfa,omitempty"`
}

// User is a user as admins see it; secrets are never part of it.
type User struct {
	Name          string              `json:"name"`
	Roles         []string            `json:"roles"`
	Traits        map[string][]string `json:"traits,omitempty"`
	Created       time.Time           `json:"created"`
	CreatedBy     string              `json:"created_by,omitempty"`
	PasswordSet   bool                `json:"password_set"`
	InviteExpires time.Time           `json:"invite_expires,omitzero"`
	LockedUntil   time.Time           `json:"locked_until,omitzero"`
}

// AddUserRequest creates a user.
type AddUserRequest struct {
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
	// DBUsers and DBNames become the traits db_users and db_names that the
	// built-in access role reads.
	DBUsers []string `json:"db_users,omitempty"`
	DBNames []string `json:"db_names,omitempty"`
	// InviteTTL is how long the invite works (default 24h).
	InviteTTL Duration `json:"invite_ttl,omitempty"`
}

// AddUserResponse carries the one-time invite. It is shown once: only its
// hash is stored.
type AddUserResponse struct {
	User          User      `json:"user"`
	Invite        string    `json:"invite"`
	InviteExpires time.Time `json:"invite_expires"`
	// Proxy is the public address users log in to; HostCAPin the
	// fingerprint of the host CA, "sha256:<hex of the DER>", which `tg
	// login --ca-pin` checks the proxy against.
	Proxy     string `json:"proxy"`
	HostCAPin string `json:"host_ca_pin"`
	// LoginCommand is the exact command to give the user.
	LoginCommand string `json:"login_command"`
}

// RolesRequest creates or replaces the roles of a YAML text (documents
// separated by ---).
type RolesRequest struct {
	YAML string `json:"yaml"`
}

// RoleResult says what happened to one role.
type RoleResult struct {
	Name string `json:"name"`
	// Result is "created", "updated" or "unchanged".
	Result string `json:"result"`
}

// Role is a role with whether it is built in.
type Role struct {
	access.Role
	Builtin bool `json:"builtin"`
}

// AddTokenRequest creates a join token.
type AddTokenRequest struct {
	Type string   `json:"type"`
	TTL  Duration `json:"ttl,omitempty"`
	// Reusable tokens work until they expire; others work once.
	Reusable bool `json:"reusable,omitempty"`
}

// Token is a join token as listed: its id is the SHA-256 of its value.
type Token struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Expires    time.Time `json:"expires"`
	SingleUse  bool      `json:"single_use"`
	Uses       int       `json:"uses"`
	LastUsedBy string    `json:"last_used_by,omitempty"`
	Created    time.Time `json:"created"`
	CreatedBy  string    `json:"created_by,omitempty"`
}

// AddTokenResponse carries the token value, shown once.
type AddTokenResponse struct {
	Token Token  `json:"token"`
	Value string `json:"value"`
	// HostCAPin is the fingerprint of the host CA the broker's API
	// presents: the joining agent's db_service.broker_ca_pin.
	HostCAPin string `json:"host_ca_pin"`
}

// SignIdentityRequest asks for a user certificate for an identity file. With
// Roles empty the user must exist and the certificate carries the user's
// roles and traits; otherwise the roles (and traits) given.
type SignIdentityRequest struct {
	User      string   `json:"user"`
	Roles     []string `json:"roles,omitempty"`
	DBUsers   []string `json:"db_users,omitempty"`
	DBNames   []string `json:"db_names,omitempty"`
	TTL       Duration `json:"ttl,omitempty"`
	PublicKey string   `json:"public_key"`
}

// SignDBRequest asks for a database server certificate.
type SignDBRequest struct {
	Hosts []string `json:"hosts"`
	TTL   Duration `json:"ttl,omitempty"`
}

// SignDBResponse holds what `auth sign --format=db` writes: the server
// certificate and key, and the db-client CA the server trusts.
type SignDBResponse struct {
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
	CAsPEM  string `json:"cas_pem"`
}

// TOTPEnrollment is a new TOTP secret: shown once, to put in an
// authenticator app (URL is the otpauth:// form QR codes carry).
type TOTPEnrollment struct {
	Secret string `json:"secret"`
	URL    string `json:"url"`
}

// TOTPConfirmRequest proves the authenticator holds the new secret.
type TOTPConfirmRequest struct {
	Code string `json:"code"`
}

// ConnectorsRequest adds or replaces the connectors of a YAML text
// (documents separated by ---).
type ConnectorsRequest struct {
	YAML string `json:"yaml"`
}

// ConnectorResult says what happened to one connector: "created",
// "updated" or "unchanged".
type ConnectorResult struct {
	Name   string `json:"name"`
	Result string `json:"result"`
}

// Connector is a single sign-on connector as listed, without its secret.
type Connector = events.Connector

// SSOLoginRequest is tg starting a single sign-on: the broker answers with
// the URL the browser opens. When the login succeeds, the browser is sent
// to RedirectURL (a loopback address tg listens on) with the certificate
// sealed with Secret, so only the tg that started this attempt can read it
// and a forged redirect cannot pass itself off as the broker's answer.
type SSOLoginRequest struct {
	Connector   string   `json:"connector"`
	PublicKey   string   `json:"public_key"`
	RedirectURL string   `json:"redirect_url"`
	Secret      string   `json:"secret"` // base64url of 32 random bytes
	TTL         Duration `json:"ttl,omitempty"`
}

// SSOLoginResponse is the URL to open in the browser.
type SSOLoginResponse struct {
	URL string `json:"url"`
}

// SSOResponseParam is the query parameter of the loopback redirect that
// carries the sealed Certificate (base64url of nonce and AES-GCM
// ciphertext); SSOErrorParam carries a refusal's message instead.
const (
	SSOResponseParam = "response"
	SSOErrorParam    = "error"
	// SSODoneParam says a ceremony without a certificate to return (a
	// security key's registration) finished; tg asks the broker whether
	// it did rather than trusting the redirect.
	SSODoneParam = "done"
)

// CheckLoopback accepts only http://127.0.0.1, [::1] or localhost with a
// port: an answer sealed for tg must not leave the machine tg runs on.
func CheckLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Port() == "" || u.User != nil {
		return fmt.Errorf("redirect_url %q: want http://127.0.0.1:PORT/… (tg's loopback listener)", raw)
	}
	h := u.Hostname()
	if ip := net.ParseIP(h); (ip == nil || !ip.IsLoopback()) && h != "localhost" {
		return fmt.Errorf("redirect_url %q: the host must be a loopback address", raw)
	}
	return nil
}

// DecodeSecret reads the base64url secret of a loopback return.
func DecodeSecret(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return nil, errors.New("secret: want base64url of 32 random bytes")
	}
	return b, nil
}

// Duration is a time.Duration written as "12h" in JSON.
type Duration time.Duration

// MarshalText writes the Go duration syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads the Go duration syntax.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (want e.g. 30m, 12h)", b)
	}
	*d = Duration(v)
	return nil
}

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// ParseCertificatePEM reads the first PEM "CERTIFICATE" of b, the form the
// responses carry certificates in.
func ParseCertificatePEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// EncodePublicKey is the PEM "PUBLIC KEY" form the requests carry.
func EncodePublicKey(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("public key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// DecodePublicKey reads a PEM "PUBLIC KEY".
func DecodePublicKey(s string) (crypto.PublicKey, error) {
	if s == "" {
		return nil, errors.New("public_key is required: the PEM PUBLIC KEY of the key to certify")
	}
	b, rest := pem.Decode([]byte(s))
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, errors.New("public_key: want one PEM \"PUBLIC KEY\" block")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("public_key: data after the PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public_key: %w", err)
	}
	return pub, nil
}

// ssoAAD ties a sealed single sign-on answer to its purpose.
var ssoAAD = []byte("tollgate sso certificate v1")

// SealSSO encrypts a single sign-on answer for the tg that holds secret
// (32 bytes): AES-256-GCM, base64url of nonce and ciphertext.
func SealSSO(secret []byte, c *Certificate) (string, error) {
	if len(secret) != 32 {
		return "", fmt.Errorf("sso secret of %d bytes; want 32", len(secret))
	}
	plain, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	blk, err := aes.NewCipher(secret)
	if err != nil {
		return "", err
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(g.Seal(nonce, nonce, plain, ssoAAD)), nil
}

// OpenSSO decrypts what SealSSO sealed; anything else is refused.
func OpenSSO(secret []byte, sealed string) (*Certificate, error) {
	b, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil {
		return nil, errors.New("the single sign-on answer is not base64url")
	}
	blk, err := aes.NewCipher(secret)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	if len(b) < g.NonceSize() {
		return nil, errors.New("the single sign-on answer is too short")
	}
	plain, err := g.Open(nil, b[:g.NonceSize()], b[g.NonceSize():], ssoAAD)
	if err != nil {
		return nil, errors.New("the single sign-on answer was not sealed for this login attempt")
	}
	var c Certificate
	if err := json.Unmarshal(plain, &c); err != nil {
		return nil, fmt.Errorf("the single sign-on answer: %w", err)
	}
	return &c, nil
}
