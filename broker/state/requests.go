package state

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// NewAccessRequest is what CreateAccessRequest needs.
type NewAccessRequest struct {
	Requester string
	Roles     []string
	Reason    string
	Expires   time.Time
}

// CreateAccessRequest stores a pending request by an existing user for
// existing roles. Whether the requester may ask for them (access.CanRequest)
// is the caller's check: it knows the requester's identity.
func (s *Store) CreateAccessRequest(ctx context.Context, by Actor, nr NewAccessRequest) (AccessRequest, error) {
	if len(nr.Roles) == 0 {
		return AccessRequest{}, invalid("access request: no roles")
	}
	if !nr.Expires.After(time.Now()) {
		return AccessRequest{}, invalid("access request: expiry %s is not in the future", nr.Expires.UTC().Format(time.RFC3339))
	}
	id := events.NewID()
	_, err := s.change(ctx, by, subject(AggAccessRequest, id), func() (events.Event, error) {
		if _, ok := s.users[nr.Requester]; !ok {
			return nil, fmt.Errorf("access request: requester %s: %w", nr.Requester, ErrNotFound)
		}
		if err := s.rolesExist(nr.Roles); err != nil {
			return nil, fmt.Errorf("access request: %w", err)
		}
		return &events.AccessRequestCreate{RequestID: id, Requester: nr.Requester, RequestRoles: slices.Clone(nr.Roles),
			Reason: nr.Reason, Expires: nr.Expires.UTC()}, nil
	})
	if err != nil {
		return AccessRequest{}, err
	}
	r, _ := s.AccessRequest(id)
	return r, nil
}

// UpdateAccessRequest moves a pending request to approved, denied or
// expired; a request that left pending does not change again. Who may
// review is the caller's check (access.CanReview).
func (s *Store) UpdateAccessRequest(ctx context.Context, by Actor, id, state, reason string) (AccessRequest, error) {
	switch state {
	case RequestApproved, RequestDenied, RequestExpired:
	default:
		return AccessRequest{}, invalid("access request %s: state %q (want approved, denied or expired)", id, state)
	}
	_, err := s.change(ctx, by, subject(AggAccessRequest, id), func() (events.Event, error) {
		r, ok := s.requests[id]
		if !ok {
			return nil, fmt.Errorf("access request %s: %w", id, ErrNotFound)
		}
		if r.State != RequestPending {
			return nil, invalid("access request %s is already %s", id, r.State)
		}
		return &events.AccessRequestUpdate{RequestID: id, State: state, Reason: reason}, nil
	})
	if err != nil {
		return AccessRequest{}, err
	}
	r, _ := s.AccessRequest(id)
	return r, nil
}

// NewLock is what CreateLock needs: exactly one target.
type NewLock struct {
	TargetUser    string
	TargetRole    string
	TargetSession string
	Message       string
	// Expires is zero for a lock that lasts until deleted.
	Expires time.Time
}

// CreateLock stores a lock. Users and roles need not exist: locking a name
// before it is created (or after it was deleted) is allowed on purpose.
func (s *Store) CreateLock(ctx context.Context, by Actor, nl NewLock) (Lock, error) {
	n := 0
	for _, t := range []string{nl.TargetUser, nl.TargetRole, nl.TargetSession} {
		if t != "" {
			n++
		}
	}
	if n != 1 {
		return Lock{}, invalid("lock: want exactly one of user, role or session, got %d", n)
	}
	if !nl.Expires.IsZero() && !nl.Expires.After(time.Now()) {
		return Lock{}, invalid("lock: expiry %s is not in the future", nl.Expires.UTC().Format(time.RFC3339))
	}
	id := events.NewID()
	_, err := s.change(ctx, by, subject(AggLock, id), func() (events.Event, error) {
		return &events.LockCreate{LockID: id, TargetUser: nl.TargetUser, TargetRole: nl.TargetRole,
			TargetSession: nl.TargetSession, Message: nl.Message, Expires: nl.Expires.UTC()}, nil
	})
	if err != nil {
		return Lock{}, err
	}
	l, _ := s.Lock(id)
	return l, nil
}

// DeleteLock removes a lock.
func (s *Store) DeleteLock(ctx context.Context, by Actor, id string) error {
	_, err := s.change(ctx, by, subject(AggLock, id), func() (events.Event, error) {
		if _, ok := s.locks[id]; !ok {
			return nil, fmt.Errorf("lock %s: %w", id, ErrNotFound)
		}
		return &events.LockDelete{LockID: id}, nil
	})
	return err
}
