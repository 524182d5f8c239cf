package requests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// CreateRequest is what Create needs.
type CreateRequest struct {
	Roles  []string
	Reason string
	// Duration is how long the access should last; 0 means the longest
	// the requester's roles allow.
	Duration time.Duration
}

// Create stores a pending request by caller for roles.
func (s *Service) Create(ctx context.Context, caller identity.Identity, cr CreateRequest) (Request, error) {
	u, ok := s.store.User(caller.User)
	if !ok {
		return Request{}, fmt.Errorf("access request: %q is not a Tollgate user (identity files cannot request access): %w", caller.User, state.ErrNotFound)
	}
	if len(cr.Roles) == 0 {
		return Request{}, fmt.Errorf("%w: access request: name at least one role (--roles)", state.ErrInvalid)
	}
	own, _ := s.store.ResolveRoles(u.Roles)
	id := identity.Identity{User: u.Name, Roles: u.Roles, Traits: u.Traits}
	var roles []string
	for _, r := range cr.Roles {
		r = strings.TrimSpace(r)
		if r == "" || slices.Contains(roles, r) {
			continue
		}
		if _, ok := s.store.Role(r); !ok {
			return Request{}, fmt.Errorf("access request: role %q: %w", r, state.ErrNotFound)
		}
		if slices.Contains(u.Roles, r) {
			return Request{}, fmt.Errorf("%w: access request: %s already holds role %q", state.ErrInvalid, u.Name, r)
		}
		if !access.CanRequest(id, own, r) {
			return Request{}, fmt.Errorf("%w: access request: none of %s's roles (%s) allows requesting role %q (allow.request.roles)",
				ErrForbidden, u.Name, strings.Join(u.Roles, ", "), r)
		}
		roles = append(roles, r)
	}
	p := access.RequestPolicyOf(own)
	reason := strings.TrimSpace(cr.Reason)
	if p.ReasonRequired && reason == "" {
		return Request{}, fmt.Errorf("%w: access request: a reason is required by %s's roles (--reason)", state.ErrInvalid, u.Name)
	}
	if len(reason) > 1024 {
		return Request{}, fmt.Errorf("%w: access request: the reason is %d bytes, at most 1024", state.ErrInvalid, len(reason))
	}
	d := cr.Duration
	switch {
	case d < 0:
		return Request{}, fmt.Errorf("%w: access request: duration %s is negative", state.ErrInvalid, d)
	case d == 0:
		d = p.MaxDuration
	case d > p.MaxDuration:
		return Request{}, fmt.Errorf("%w: access request: duration %s is longer than the %s %s's roles allow (max_duration)", state.ErrInvalid, d, p.MaxDuration, u.Name)
	}
	rid := events.NewID()
	// Whole seconds, as certificates count time: a certificate issued for
	// the grant then ends exactly with it, not a fraction of a second
	// before.
	ev := &events.AccessRequestCreate{RequestID: rid, Requester: u.Name, RequestRoles: roles, Reason: reason,
		Expires: s.now().Add(d).UTC().Truncate(time.Second)}
	if err := s.append(ctx, state.Actor{User: caller.User, Roles: caller.Roles}, rid, func(*Request) (events.Event, error) {
		return ev, nil
	}); err != nil {
		return Request{}, err
	}
	r, _ := s.Get(rid)
	return r, nil
}
