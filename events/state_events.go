package events

import (
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
)

// Events of the control plane. Each one is a change of an aggregate stored
// in the STATE stream under state.<aggregate>.<id> (broker/state applies
// them); being events, they are audit records too, and exporters read them.
// The envelope's user and roles say who made the change.
//
// No secret ever enters these events: password hashes and invite token
// hashes live in the broker's private CREDENTIALS key-value bucket, and a
// join token is known here only by the SHA-256 of its 256-bit random value,
// which reveals nothing about it. Database heartbeats (db.heartbeat) are not
// stored in STATE: they are kept, latest only, in the DB_HEARTBEATS bucket.

func init() {
	Register[UserCreate]("user.create", "TGUS001I",
		"A user was created, with roles and traits; an invite lets them set a password.")
	Register[UserUpdate]("user.update", "TGUS002I",
		"A user's roles, traits or lock-out changed; the event holds the new values.")
	Register[UserDelete]("user.delete", "TGUS003I",
		"A user was deleted.")
	Register[UserPasswordSet]("user.password_set", "TGUS004I",
		"A user's password was set or changed; the hash is never part of the event.")
	Register[UserMFAAdd]("user.mfa_add", "TGUS005I",
		"A user enrolled a second factor (TOTP or WebAuthn); its secret is never part of the event.")
	Register[UserMFARemove]("user.mfa_remove", "TGUS006I",
		"A second factor of a user was removed: by the user after checking a factor, or all of them by an administrator (reset).")

	Register[RoleCreate]("role.create", "TGRL001I",
		"A role was created; the event holds the full role.")
	Register[RoleUpdate]("role.update", "TGRL002I",
		"A role was replaced; the event holds the full new role.")
	Register[RoleDelete]("role.delete", "TGRL003I",
		"A role was deleted.")

	Register[TokenCreate]("token.create", "TGTK001I",
		"A join token was created; it is identified by the SHA-256 of its value, never the value.")
	RegisterOutcome[TokenUse]("token.use", "TGTK002I", "TGTK002W",
		"A join token was presented by an agent: accepted, or refused (unknown, expired or already used).")

	Register[DBCreate]("db.create", "TGDS001I",
		"An agent registered a database (or registered it again with new details).")
	Register[DBHeartbeat]("db.heartbeat", "TGDS002I",
		"An agent reported that a database it serves is alive; kept latest-only outside STATE.")
	Register[DBDelete]("db.delete", "TGDS003I",
		"A database was removed from the cluster.")

	Register[CAPublish]("ca.publish", "TGCA001I",
		"The public certificates of a certificate authority were published.")

	Register[AccessRequestCreate]("access_request.create", "TGAR001I",
		"A user asked for extra roles for a while, with a reason.")
	Register[AccessRequestUpdate]("access_request.update", "TGAR002I",
		"An access request changed state: approved, denied or expired.")

	Register[LockCreate]("lock.create", "TGLK001I",
		"A lock was placed on a user, a role or a session; matching sessions end and new ones are refused.")
	Register[LockDelete]("lock.delete", "TGLK002I",
		"A lock was removed.")
}

// UserCreate records a new user.
type UserCreate struct {
	Envelope
	Name      string              `json:"name" jsonschema:"description=User name"`
	UserRoles []string            `json:"user_roles" jsonschema:"description=Roles granted to the user"`
	Traits    map[string][]string `json:"traits,omitempty" jsonschema:"description=Traits used by role templates (db_users and db_names among them)"`
	// InviteExpires is set when the user was given an invite to set a
	// password; the invite itself is never in the event.
	InviteExpires time.Time `json:"invite_expires,omitzero" jsonschema:"description=When the invite to set a password expires"`
}

// UserUpdate records the new values of a user's mutable fields.
type UserUpdate struct {
	Envelope
	Name      string              `json:"name" jsonschema:"description=User name"`
	UserRoles []string            `json:"user_roles" jsonschema:"description=Roles granted to the user"`
	Traits    map[string][]string `json:"traits,omitempty" jsonschema:"description=Traits used by role templates"`
	// LockedUntil is set while the user is locked out (failed logins).
	LockedUntil time.Time `json:"locked_until,omitzero" jsonschema:"description=The user cannot log in until then"`
	LockReason  string    `json:"lock_reason,omitempty" jsonschema:"description=Why the user is locked out"`
}

// UserDelete records a deleted user.
type UserDelete struct {
	Envelope
	Name string `json:"name" jsonschema:"description=User name"`
}

// UserPasswordSet records that a password was set; the hash is kept in the
// CREDENTIALS bucket only.
type UserPasswordSet struct {
	Envelope
	Name string `json:"name" jsonschema:"description=User name"`
	// InviteUsed is true when the password was set with an invite.
	InviteUsed bool `json:"invite_used" jsonschema:"description=The password was set with an invite"`
}

// MFA methods (UserMFAAdd.Method, UserLogin.MFA). MFAProvider is a single
// sign-on whose provider said it checked a second factor (amr "mfa").
const (
	MFATOTP     = "totp"
	MFAProvider = "provider"
	// MFAWebAuthn is a security key or passkey (WebAuthn).
	MFAWebAuthn = "webauthn"
)

// UserMFAAdd records that a user enrolled a second factor; the secret is
// kept in the CREDENTIALS bucket only.
type UserMFAAdd struct {
	Envelope
	Name   string `json:"name" jsonschema:"description=User name"`
	Method string `json:"method" jsonschema:"enum=totp,enum=webauthn,description=Second factor enrolled: totp (RFC 6238 one-time codes) or webauthn (a security key or passkey)"`
}

// UserMFARemove records that second factors of a user were removed: one
// (Factor) by its owner, or all of them (Reset) by an administrator, the
// envelope's user being who did it.
type UserMFARemove struct {
	Envelope
	Name string `json:"name" jsonschema:"description=User name"`
	// Factor is the factor removed (totp, or key-HEX for a security key);
	// empty for a reset.
	Factor string `json:"factor,omitempty" jsonschema:"description=The factor removed: totp or key-HEX (a security key); empty when all were (reset)"`
	Reset  bool   `json:"reset,omitempty" jsonschema:"description=All of the user's second factors were removed by an administrator"`
	// TOTP and WebAuthn say what the user has left.
	TOTP     bool `json:"totp" jsonschema:"description=The user still has an authenticator app"`
	WebAuthn bool `json:"webauthn" jsonschema:"description=The user still has a security key"`
}

// RoleCreate records a new role.
type RoleCreate struct {
	Envelope
	Name string      `json:"name" jsonschema:"description=Role name"`
	Role access.Role `json:"role" jsonschema:"description=The full role as written in YAML"`
}

// RoleUpdate records a role replaced by a new version.
type RoleUpdate struct {
	Envelope
	Name string      `json:"name" jsonschema:"description=Role name"`
	Role access.Role `json:"role" jsonschema:"description=The full new role"`
}

// RoleDelete records a deleted role.
type RoleDelete struct {
	Envelope
	Name string `json:"name" jsonschema:"description=Role name"`
}

// TokenCreate records a new join token.
type TokenCreate struct {
	Envelope
	// TokenID is the hex SHA-256 of the token's value.
	TokenID   string    `json:"token_id" jsonschema:"description=Hex SHA-256 of the token value (never the value)"`
	TokenType string    `json:"token_type" jsonschema:"enum=db,description=What the token lets join"`
	Expires   time.Time `json:"expires" jsonschema:"description=When the token stops working"`
	SingleUse bool      `json:"single_use" jsonschema:"description=The token works once"`
}

// TokenUse records a join token presented by an agent. Only accepted uses
// are stored in STATE; refusals are audit events only.
type TokenUse struct {
	Envelope
	Status
	TokenID   string `json:"token_id" jsonschema:"description=Hex SHA-256 of the token value"`
	TokenType string `json:"token_type,omitempty" jsonschema:"description=What the token lets join"`
	HostID    string `json:"host_id" jsonschema:"description=Host id of the agent that presented it"`
}

// DBCreate records the registration of a database by an agent.
type DBCreate struct {
	Envelope
	Service  string            `json:"db_service" jsonschema:"description=Name of the database in Tollgate"`
	Protocol string            `json:"db_protocol" jsonschema:"enum=postgres,enum=cockroachdb,enum=mysql,enum=sqlserver,enum=redis,description=Wire protocol"`
	URI      string            `json:"db_uri" jsonschema:"description=Address of the database as the agent reaches it"`
	Labels   map[string]string `json:"db_labels,omitempty" jsonschema:"description=Labels roles select databases by"`
	HostID   string            `json:"host_id" jsonschema:"description=Host id of the agent serving the database"`
	// AgentAddr is where clients reach the agent (db_service.public_addr);
	// tg dials it with the database name as TLS server name.
	AgentAddr string `json:"agent_addr,omitempty" jsonschema:"description=Address (host:port) clients reach the agent serving the database at"`
	// HeartbeatTTLNs is how long the database stays listed without a
	// heartbeat.
	HeartbeatTTLNs int64 `json:"heartbeat_ttl_ns" jsonschema:"description=The database expires this many nanoseconds after its last heartbeat"`
}

// DBHeartbeat says a database is still served. It is stored latest-only in
// the DB_HEARTBEATS bucket, keyed by database, not in STATE.
type DBHeartbeat struct {
	Envelope
	Service string `json:"db_service" jsonschema:"description=Name of the database in Tollgate"`
	HostID  string `json:"host_id" jsonschema:"description=Host id of the agent serving the database"`
}

// DBDelete records a database removed from the cluster.
type DBDelete struct {
	Envelope
	Service string `json:"db_service" jsonschema:"description=Name of the database in Tollgate"`
}

// CAPublish records the public certificates of a certificate authority.
type CAPublish struct {
	Envelope
	CAType string `json:"ca_type" jsonschema:"enum=user,enum=host,enum=db,enum=db-client,description=Which authority"`
	// CertPEM holds one or more PEM certificates (more than one while a
	// rotation is under way). Never a key.
	CertPEM      string   `json:"cert_pem" jsonschema:"description=PEM certificates of the authority (public only)"`
	Fingerprints []string `json:"sha256_fingerprints" jsonschema:"description=Hex SHA-256 of each certificate (DER)"`
}

// AccessRequestCreate records a request for extra roles.
type AccessRequestCreate struct {
	Envelope
	RequestID    string    `json:"request_id" jsonschema:"description=Request id"`
	Requester    string    `json:"requester" jsonschema:"description=User asking for the roles"`
	RequestRoles []string  `json:"request_roles" jsonschema:"description=Roles asked for"`
	Reason       string    `json:"reason,omitempty" jsonschema:"description=Why the requester needs them"`
	Expires      time.Time `json:"expires" jsonschema:"description=When the request (and any access it grants) ends"`
}

// AccessRequestUpdate records a change of state of an access request.
type AccessRequestUpdate struct {
	Envelope
	RequestID string `json:"request_id" jsonschema:"description=Request id"`
	State     string `json:"state" jsonschema:"enum=pending,enum=approved,enum=denied,enum=expired,description=New state"`
	Reason    string `json:"reason,omitempty" jsonschema:"description=Why (e.g. the reviewer's comment)"`
}

// LockCreate records a lock on a user, a role or a session.
type LockCreate struct {
	Envelope
	LockID        string    `json:"lock_id" jsonschema:"description=Lock id"`
	TargetUser    string    `json:"target_user,omitempty" jsonschema:"description=Locked user"`
	TargetRole    string    `json:"target_role,omitempty" jsonschema:"description=Locked role: every holder is locked"`
	TargetSession string    `json:"target_sid,omitempty" jsonschema:"description=Locked session id"`
	Message       string    `json:"message,omitempty" jsonschema:"description=Message shown to whoever is locked out"`
	Expires       time.Time `json:"expires,omitzero" jsonschema:"description=When the lock lapses; absent means never"`
}

// LockDelete records a removed lock.
type LockDelete struct {
	Envelope
	LockID string `json:"lock_id" jsonschema:"description=Lock id"`
}
