package access

import (
	"fmt"
	"time"
)

// Defaults of the access-request workflow where no role says otherwise.
const (
	DefaultApprovals   = 1
	DefaultMaxDuration = 12 * time.Hour
	DefaultPendingTTL  = time.Hour
)

// RequestPolicy is how a request for some roles is reviewed and how long
// it may last, merged over the requester's roles that allow it.
type RequestPolicy struct {
	// Approvals needed from distinct reviewers other than the requester.
	Approvals int
	// MaxDuration caps the access an approval grants.
	MaxDuration time.Duration
	// PendingTTL is how long the request waits for reviews.
	PendingTTL time.Duration
	// ReasonRequired says a reason must be given.
	ReasonRequired bool
}

// RequestPolicyOf merges the request conditions of roles (the requester's
// roles): the most approvals, the shortest durations, and a reason when any
// role requires one win. Roles without request conditions do not count.
func RequestPolicyOf(roles []Role) RequestPolicy {
	p := RequestPolicy{}
	for i := range roles {
		r := roles[i].Spec.Allow.Request
		if r == nil {
			continue
		}
		p.Approvals = max(p.Approvals, r.Approvals)
		p.MaxDuration = smaller(p.MaxDuration, r.MaxDuration)
		p.PendingTTL = smaller(p.PendingTTL, r.PendingTTL)
		p.ReasonRequired = p.ReasonRequired || r.ReasonRequired
	}
	if p.Approvals < 1 {
		p.Approvals = DefaultApprovals
	}
	if p.MaxDuration == 0 {
		p.MaxDuration = DefaultMaxDuration
	}
	if p.PendingTTL == 0 {
		p.PendingTTL = DefaultPendingTTL
	}
	return p
}

func (r RequestConditions) validate() (path, msg string) {
	if r.Approvals < 0 || r.Approvals > 100 {
		return "approvals", fmt.Sprintf("%d: want 1 to 100 (0 or unset means 1)", r.Approvals)
	}
	for _, d := range []struct{ name, v string }{{"max_duration", r.MaxDuration}, {"pending_ttl", r.PendingTTL}} {
		if d.v == "" {
			continue
		}
		if v, err := time.ParseDuration(d.v); err != nil || v <= 0 {
			return d.name, fmt.Sprintf("%q is not a positive duration (want e.g. 30m, 4h)", d.v)
		}
	}
	return "", ""
}
