package access

import (
	"time"

	"github.com/tollgate-db/tollgate/broker/identity"
)

// Audit modes a role may ask for.
const (
	AuditStrict = "strict"
	AuditAsync  = "async"
)

// RoleOptions are the session options of a set of roles, merged.
type RoleOptions struct {
	// MaxSessionTTL is the smallest max_session_ttl of the roles; zero when
	// no role sets one (the issuer's own limit applies).
	MaxSessionTTL time.Duration
	// ClientIdleTimeout is the smallest client_idle_timeout; zero when no
	// role sets one (sessions are not closed for idleness).
	ClientIdleTimeout time.Duration
	// DisconnectExpiredCert is true when any role asks for it.
	DisconnectExpiredCert bool
	// AuditMode is AuditStrict when any role says strict, AuditAsync when
	// some role says async and none says strict, "" when no role says
	// anything. The agent combines it with its configured mode the same
	// way: strict from either side wins.
	AuditMode string
	// NoMySQLLocalInfile is true when any role sets mysql_local_infile:
	// false: the MySQL engine then refuses LOAD DATA LOCAL INFILE.
	NoMySQLLocalInfile bool
	// RedisMonitor is true when some role sets redis_monitor: true and
	// none sets it false: MONITOR shows every client's commands, so it
	// takes an explicit grant and any refusal wins.
	RedisMonitor bool
	// RequireSessionMFA is true when any role sets require_session_mfa:
	// a session then needs a certificate issued for it after a second
	// factor (identity.MFASession).
	RequireSessionMFA bool
}

// Options merges the options of roles; the most restrictive value wins.
func Options(roles []Role) RoleOptions {
	var o RoleOptions
	monitorDenied := false
	for i := range roles {
		ro := &roles[i].Spec.Options
		o.MaxSessionTTL = smaller(o.MaxSessionTTL, ro.MaxSessionTTL)
		o.ClientIdleTimeout = smaller(o.ClientIdleTimeout, ro.ClientIdleTimeout)
		if ro.DisconnectExpiredCert != nil && *ro.DisconnectExpiredCert {
			o.DisconnectExpiredCert = true
		}
		if ro.RequireSessionMFA != nil && *ro.RequireSessionMFA {
			o.RequireSessionMFA = true
		}
		if ro.MySQLLocalInfile != nil && !*ro.MySQLLocalInfile {
			o.NoMySQLLocalInfile = true
		}
		if ro.RedisMonitor != nil {
			if *ro.RedisMonitor {
				o.RedisMonitor = true
			} else {
				monitorDenied = true
			}
		}
		switch ro.AuditMode {
		case AuditStrict:
			o.AuditMode = AuditStrict
		case AuditAsync:
			if o.AuditMode == "" {
				o.AuditMode = AuditAsync
			}
		}
	}
	if monitorDenied {
		o.RedisMonitor = false
	}
	return o
}

// smaller returns the smaller positive of cur and the duration written in
// s. Validate rejects unparsable durations before a role is stored; one that
// slips through anyway is ignored rather than taken as "no limit" by some
// and "zero" by others.
func smaller(cur time.Duration, s string) time.Duration {
	if s == "" {
		return cur
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return cur
	}
	if cur == 0 || d < cur {
		return d
	}
	return cur
}

// CanRequest reports whether holders of roles may request the role named
// want: some role's allow.request.roles matches it and no deny.request.roles
// does.
func CanRequest(id identity.Identity, roles []Role, want string) bool {
	return sideRoles(id, roles, want, func(c *Conditions) []string {
		if c.Request == nil {
			return nil
		}
		return c.Request.Roles
	})
}

// ReasonRequired reports whether any of roles requires a reason on the
// requests its holders make.
func ReasonRequired(roles []Role) bool {
	for i := range roles {
		if r := roles[i].Spec.Allow.Request; r != nil && r.ReasonRequired {
			return true
		}
	}
	return false
}

// CanReview reports whether holders of roles may review requests for the
// role named target.
func CanReview(id identity.Identity, roles []Role, target string) bool {
	return sideRoles(id, roles, target, func(c *Conditions) []string {
		if c.ReviewRequests == nil {
			return nil
		}
		return c.ReviewRequests.Roles
	})
}

func sideRoles(id identity.Identity, roles []Role, name string, get func(*Conditions) []string) bool {
	for i := range roles {
		if anyMatch(get(&roles[i].Spec.Deny), name, id.Traits, true) {
			return false
		}
	}
	for i := range roles {
		if anyMatch(get(&roles[i].Spec.Allow), name, id.Traits, false) {
			return true
		}
	}
	return false
}
