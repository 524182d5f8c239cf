package requests

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// Review records caller's verdict on a pending request, then decides it
// when the verdicts reach a threshold: one denial denies, the approvals
// the requester's roles need approve.
func (s *Service) Review(ctx context.Context, caller identity.Identity, id, verdict, reason string) (Request, error) {
	if verdict != events.ReviewApprove && verdict != events.ReviewDeny {
		return Request{}, fmt.Errorf("%w: review: verdict %q (want approve or deny)", state.ErrInvalid, verdict)
	}
	reason = strings.TrimSpace(reason)
	if len(reason) > 1024 {
		return Request{}, fmt.Errorf("%w: review: the reason is %d bytes, at most 1024", state.ErrInvalid, len(reason))
	}
	if err := s.expireOne(ctx, id); err != nil && !errors.Is(err, errNothing) {
		return Request{}, err
	}
	callerRoles, _ := s.store.ResolveRoles(caller.Roles)
	editor := slices.Contains(caller.Roles, access.RoleEditor)
	by := state.Actor{User: caller.User, Roles: caller.Roles}
	var needed int
	err := s.append(ctx, by, id, func(r *Request) (events.Event, error) {
		if r == nil {
			return nil, fmt.Errorf("access request %s: %w", id, state.ErrNotFound)
		}
		if r.State != state.RequestPending {
			return nil, fmt.Errorf("%w: access request %s is already %s", state.ErrInvalid, id, r.State)
		}
		if r.Requester == caller.User {
			return nil, fmt.Errorf("%w: %s cannot review their own access request %s", ErrForbidden, caller.User, id)
		}
		for _, v := range r.Reviews {
			if v.Reviewer == caller.User {
				return nil, fmt.Errorf("%w: %s already reviewed access request %s (%s)", state.ErrInvalid, caller.User, id, v.Verdict)
			}
		}
		if !editor {
			for _, role := range r.Roles {
				if !access.CanReview(caller, callerRoles, role) {
					return nil, fmt.Errorf("%w: none of %s's roles (%s) allows reviewing requests for role %q (allow.review_requests.roles)",
						ErrForbidden, caller.User, strings.Join(caller.Roles, ", "), role)
				}
			}
		}
		a, d := r.Counts()
		if verdict == events.ReviewApprove {
			a++
		} else {
			d++
		}
		needed = r.ApprovalsNeeded
		if needed == 0 {
			needed = s.policy(r.Requester).Approvals
		}
		return &events.AccessRequestReview{RequestID: id, Verdict: verdict, Reason: reason, Approvals: a, Denials: d, Needed: needed}, nil
	})
	if err != nil {
		return Request{}, err
	}
	if err := s.decide(ctx, by, id); err != nil {
		return Request{}, err
	}
	r, _ := s.Get(id)
	return r, nil
}

// decide moves a pending request whose verdicts reached a threshold to
// approved or denied. It is also run by the sweep, so a broker that
// stopped between a review and the decision finishes it.
func (s *Service) decide(ctx context.Context, by state.Actor, id string) error {
	err := s.append(ctx, by, id, func(r *Request) (events.Event, error) {
		if r == nil || r.State != state.RequestPending || len(r.Reviews) == 0 {
			return nil, errNothing
		}
		a, d := r.Counts()
		last := r.Reviews[len(r.Reviews)-1]
		switch {
		case d > 0:
			return &events.AccessRequestUpdate{RequestID: id, State: state.RequestDenied, Reason: denyReason(r)}, nil
		case a >= max(r.ApprovalsNeeded, 1):
			return &events.AccessRequestUpdate{RequestID: id, State: state.RequestApproved, Reason: last.Reason}, nil
		}
		return nil, errNothing
	})
	if errors.Is(err, errNothing) {
		return nil
	}
	return err
}

func denyReason(r *Request) string {
	for _, v := range r.Reviews {
		if v.Verdict == events.ReviewDeny {
			if v.Reason == "" {
				return "denied by " + v.Reviewer
			}
			return v.Reason
		}
	}
	return ""
}
