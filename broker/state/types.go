// Package state is Tollgate's control plane as an event-sourced projection
// of the STATE stream: users, roles, join tokens, databases, the public
// certificates of the certificate authorities, access requests and locks.
//
// Every change is an event of events/state_events.go stored under
// state.<aggregate>.<id>. A Projection replays the stream into memory and
// follows it; agents run one to read roles, locks and CA certificates. A
// Store (the broker) adds the commands: each validates against the
// projection and appends with Nats-Expected-Last-Subject-Sequence set to the
// aggregate's last sequence, so two brokers racing on one aggregate cannot
// both win; the loser catches up and tries again against the new state.
//
// Two things are deliberately not in STATE, which is kept forever and read
// by the exporters:
//   - Secrets. Password hashes and invite hashes live in the CREDENTIALS
//     key-value bucket, readable by the broker only (Store.Credentials).
//     Join tokens appear only as the SHA-256 of their 256-bit value.
//   - Heartbeats. An agent reports each database every few seconds; as
//     events in STATE they would grow replay without bound and drown the
//     audit trail in noise. They live latest-only in the DB_HEARTBEATS
//     bucket (one entry per database, itself a stream with one message
//     per key), which the projection watches alongside STATE.
package state

import (
	"maps"
	"slices"
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
)

// Aggregates: the <aggregate> token of state.<aggregate>.<id>.
const (
	AggUser          = "user"
	AggRole          = "role"
	AggToken         = "token"
	AggDatabase      = "db"
	AggCA            = "ca"
	AggAccessRequest = "access_request"
	AggLock          = "lock"
)

// Key-value buckets kept beside the STATE stream.
const (
	// CredentialsBucket holds password and invite hashes by user; only the
	// broker reads it.
	CredentialsBucket = "CREDENTIALS"
	// HeartbeatsBucket holds the latest db.heartbeat of each database.
	HeartbeatsBucket = "DB_HEARTBEATS"
)

// Actor is who makes a change: it becomes the user and roles of the event.
type Actor struct {
	User  string
	Roles []string
}

// User is a Tollgate user. Its password hash is not here: see Credentials.
type User struct {
	Name   string
	Roles  []string
	Traits map[string][]string
	// Created and CreatedBy come from user.create; Updated from the last
	// change of any kind.
	Created   time.Time
	CreatedBy string
	Updated   time.Time
	// InviteExpires is set while an invite to set a password is pending.
	InviteExpires time.Time
	// PasswordSet says a password hash is stored in CREDENTIALS.
	PasswordSet   bool
	PasswordSetAt time.Time
	// TOTP says a TOTP secret is enrolled (kept in CREDENTIALS): the
	// password alone no longer logs the user in.
	TOTP bool
	// WebAuthn says a security key or passkey is registered (its public
	// key kept in CREDENTIALS): a password sign-in needs it too.
	WebAuthn bool
	// LockedUntil is set while the user is locked out after failed logins.
	LockedUntil time.Time
	LockReason  string
}

// LockedOut reports whether the user may not log in at now.
func (u User) LockedOut(now time.Time) bool { return now.Before(u.LockedUntil) }

// InvitePending reports whether the user's invite can still be used at now.
func (u User) InvitePending(now time.Time) bool {
	return !u.PasswordSet && now.Before(u.InviteExpires)
}

func (u User) clone() User {
	u.Roles = slices.Clone(u.Roles)
	u.Traits = cloneTraits(u.Traits)
	return u
}

// Token is a join token, known by the SHA-256 of its value (TokenID).
type Token struct {
	ID        string
	Type      string
	Expires   time.Time
	SingleUse bool
	Created   time.Time
	CreatedBy string
	// Uses counts accepted uses; LastUsedBy is the host id of the last.
	Uses       int
	LastUsed   time.Time
	LastUsedBy string
}

// Usable reports why the token cannot be used at now, or "".
func (t Token) Usable(now time.Time) string {
	switch {
	case !now.Before(t.Expires):
		return "expired at " + t.Expires.UTC().Format(time.RFC3339)
	case t.SingleUse && t.Uses > 0:
		return "single-use token already used by " + t.LastUsedBy + " at " + t.LastUsed.UTC().Format(time.RFC3339)
	}
	return ""
}

// Database is a database registered by an agent, with its last heartbeat.
type Database struct {
	Name     string
	Protocol string
	URI      string
	Labels   map[string]string
	HostID   string
	// AgentAddr is where clients reach the agent serving it (host:port).
	AgentAddr string
	// HeartbeatTTL is how long the database stays live without a
	// heartbeat.
	HeartbeatTTL time.Duration
	Registered   time.Time
	// LastHeartbeat and HeartbeatHost come from DB_HEARTBEATS; zero when
	// none was seen.
	LastHeartbeat time.Time
	HeartbeatHost string
}

// Expires is when the database stops being live unless a heartbeat comes.
func (d Database) Expires() time.Time {
	last := d.Registered
	if d.LastHeartbeat.After(last) {
		last = d.LastHeartbeat
	}
	return last.Add(d.HeartbeatTTL)
}

// Expired reports whether the database's heartbeats stopped before now.
func (d Database) Expired(now time.Time) bool { return !now.Before(d.Expires()) }

// AccessDatabase is the database as the access decision sees it.
func (d Database) AccessDatabase() access.Database {
	return access.Database{Name: d.Name, Labels: d.Labels, IgnoreDBName: access.IgnoresDBName(d.Protocol)}
}

func (d Database) clone() Database {
	d.Labels = maps.Clone(d.Labels)
	return d
}

// CA is the public half of a certificate authority.
type CA struct {
	Type         string
	CertPEM      string
	Fingerprints []string
	Published    time.Time
	PublishedBy  string
}

func (c CA) clone() CA {
	c.Fingerprints = slices.Clone(c.Fingerprints)
	return c
}

// Access request states.
const (
	RequestPending  = "pending"
	RequestApproved = "approved"
	RequestDenied   = "denied"
	RequestExpired  = "expired"
)

// AccessRequest is a request for extra roles.
type AccessRequest struct {
	ID        string
	Requester string
	Roles     []string
	Reason    string
	Expires   time.Time
	State     string
	Created   time.Time
	// Updated, UpdatedBy and UpdateReason come from the last state change.
	Updated      time.Time
	UpdatedBy    string
	UpdateReason string
}

func (r AccessRequest) clone() AccessRequest {
	r.Roles = slices.Clone(r.Roles)
	return r
}

// Lock stops a user, every holder of a role, or one session.
type Lock struct {
	ID            string
	TargetUser    string
	TargetRole    string
	TargetSession string
	Message       string
	// Expires is zero for a lock that lasts until deleted.
	Expires   time.Time
	Created   time.Time
	CreatedBy string
}

// Active reports whether the lock is in force at now.
func (l Lock) Active(now time.Time) bool { return l.Expires.IsZero() || now.Before(l.Expires) }

// Matches reports whether the lock, in force at now, stops a session of
// user holding roles with session id sid (sid may be "" for a new one).
func (l Lock) Matches(now time.Time, user string, roles []string, sid string) bool {
	if !l.Active(now) {
		return false
	}
	switch {
	case l.TargetUser != "":
		return l.TargetUser == user
	case l.TargetRole != "":
		return slices.Contains(roles, l.TargetRole)
	case l.TargetSession != "":
		return l.TargetSession == sid
	}
	return false
}

// Snapshot is a copy of the whole projection at one stream sequence.
type Snapshot struct {
	// Seq is the last STATE stream sequence applied.
	Seq            uint64
	Users          map[string]User
	Roles          map[string]access.Role
	Tokens         map[string]Token
	Databases      map[string]Database
	CAs            map[string]CA
	AccessRequests map[string]AccessRequest
	Locks          map[string]Lock
}

func cloneTraits(t map[string][]string) map[string][]string {
	if t == nil {
		return nil
	}
	out := make(map[string][]string, len(t))
	for k, v := range t {
		out[k] = slices.Clone(v)
	}
	return out
}

// cloneRole deep-copies a role so readers cannot change the projection.
func cloneRole(r access.Role) access.Role {
	c := &r.Spec
	for _, side := range []*access.Conditions{&c.Allow, &c.Deny} {
		if side.DBLabels != nil {
			l := make(access.Labels, len(side.DBLabels))
			for k, v := range side.DBLabels {
				l[k] = slices.Clone(v)
			}
			side.DBLabels = l
		}
		side.DBUsers = slices.Clone(side.DBUsers)
		side.DBNames = slices.Clone(side.DBNames)
		if side.Request != nil {
			rq := *side.Request
			rq.Roles = slices.Clone(rq.Roles)
			side.Request = &rq
		}
		if side.ReviewRequests != nil {
			rv := *side.ReviewRequests
			rv.Roles = slices.Clone(rv.Roles)
			side.ReviewRequests = &rv
		}
	}
	if c.Options.DisconnectExpiredCert != nil {
		v := *c.Options.DisconnectExpiredCert
		c.Options.DisconnectExpiredCert = &v
	}
	if c.Options.MySQLLocalInfile != nil {
		v := *c.Options.MySQLLocalInfile
		c.Options.MySQLLocalInfile = &v
	}
	if c.Options.RedisMonitor != nil {
		v := *c.Options.RedisMonitor
		c.Options.RedisMonitor = &v
	}
	return r
}
