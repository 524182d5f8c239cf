package requests

import (
	"fmt"
	"slices"
	"time"

	"github.com/tollgate-db/tollgate/broker/state"
)

// Grant is what approved requests give a certificate.
type Grant struct {
	// Roles are the requested roles of every request, in order.
	Roles []string
	// RequestIDs are the requests used.
	RequestIDs []string
	// Until is the earliest end of the requests' grants.
	Until time.Time
}

// Grant checks that every request in ids is caller's, approved and not
// over, and returns what they grant together.
func (s *Service) Grant(caller string, ids []string) (Grant, error) {
	if len(ids) == 0 {
		return Grant{}, fmt.Errorf("%w: no access request named", state.ErrInvalid)
	}
	now := s.now()
	var g Grant
	for _, id := range ids {
		r, ok := s.Get(id)
		switch {
		case !ok:
			return Grant{}, fmt.Errorf("access request %s: %w", id, state.ErrNotFound)
		case r.Requester != caller:
			return Grant{}, fmt.Errorf("%w: access request %s is %s's, not %s's", ErrForbidden, id, r.Requester, caller)
		case r.State != state.RequestApproved:
			return Grant{}, fmt.Errorf("%w: access request %s is %s, not approved", ErrForbidden, id, r.State)
		case !now.Before(r.Expires):
			return Grant{}, fmt.Errorf("%w: the access of request %s ended at %s", ErrForbidden, id, r.Expires.UTC().Format(time.RFC3339))
		}
		if slices.Contains(g.RequestIDs, id) {
			continue
		}
		g.RequestIDs = append(g.RequestIDs, id)
		for _, role := range r.Roles {
			if !slices.Contains(g.Roles, role) {
				g.Roles = append(g.Roles, role)
			}
		}
		if g.Until.IsZero() || r.Expires.Before(g.Until) {
			g.Until = r.Expires
		}
	}
	return g, nil
}
