package login

import (
	"context"
	"crypto"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// ReissueWithGrant is Reissue for a certificate that also carries roles
// granted by approved access requests (broker/requests checks the grant):
// the user's own roles plus extra, the request ids in the identity, and a
// lifetime that ends no later than until, when the grant ends.
func (s *Service) ReissueWithGrant(ctx context.Context, caller identity.Identity, pub crypto.PublicKey, ttl time.Duration,
	extra, requestIDs []string, until time.Time, m Meta) (*Issued, error) {
	if err := CheckPublicKey(pub); err != nil {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: "reissue: " + err.Error()}
	}
	if ttl < 0 {
		return nil, &Refusal{Status: http.StatusBadRequest, Message: fmt.Sprintf("ttl %s is negative", ttl)}
	}
	u, ok := s.store.User(caller.User)
	if !ok {
		return nil, &Refusal{Status: http.StatusForbidden, Message: fmt.Sprintf("reissue: %q is not a Tollgate user", caller.User)}
	}
	roles := slices.Clone(u.Roles)
	for _, r := range extra {
		if !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	left := until.Sub(s.now())
	if left < time.Second {
		return nil, &Refusal{Status: http.StatusForbidden, Message: "reissue: the access granted ends at " + until.UTC().Format(time.RFC3339)}
	}
	ttl = min(s.UserTTL(roles, ttl), left)
	id := identity.Identity{User: u.Name, Roles: roles, Traits: u.Traits, AccessRequests: slices.Clone(requestIDs)}
	ev := &events.UserLogin{Method: events.LoginCertificate, SourceAddr: m.Source, UserAgent: clip(m.UserAgent, 200), Path: m.Path}
	ev.User, ev.Roles, ev.Success = u.Name, roles, true
	return s.issue(ctx, state.Actor{User: u.Name, Roles: caller.Roles}, id, pub, ttl, events.IssueReissue, m.Source, ev, false)
}
