package requests

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// expireOne expires request id if its time is up: a pending request past
// its pending deadline or its end, an approved one past its end.
func (s *Service) expireOne(ctx context.Context, id string) error {
	now := s.now()
	return s.append(ctx, s.actor, id, func(r *Request) (events.Event, error) {
		if r == nil {
			return nil, errNothing
		}
		c := r.clone()
		s.fill(&c)
		switch {
		case c.State == state.RequestPending && !now.Before(c.PendingUntil):
			return &events.AccessRequestUpdate{RequestID: id, State: state.RequestExpired,
				Reason: fmt.Sprintf("not approved within %s", c.PendingUntil.Sub(c.Created).Round(time.Second))}, nil
		case c.State == state.RequestApproved && !now.Before(c.Expires):
			return &events.AccessRequestUpdate{RequestID: id, State: state.RequestExpired,
				Reason: "the access granted ended at " + c.Expires.UTC().Format(time.RFC3339)}, nil
		}
		return nil, errNothing
	})
}

// Sweep expires every request whose time is up and decides requests left
// undecided. It returns the ids it changed.
func (s *Service) Sweep(ctx context.Context) ([]string, error) {
	var changed []string
	var errs []error
	for _, r := range s.List() {
		if r.State != state.RequestPending && r.State != state.RequestApproved {
			continue
		}
		before := r.State
		if err := s.expireOne(ctx, r.ID); err != nil && !errors.Is(err, errNothing) {
			errs = append(errs, err)
			continue
		}
		if err := s.decide(ctx, s.actor, r.ID); err != nil {
			errs = append(errs, err)
		}
		if now, ok := s.Get(r.ID); ok && now.State != before {
			changed = append(changed, r.ID)
		}
	}
	return changed, errors.Join(errs...)
}

// Run sweeps until ctx ends: expiry is an event the broker writes on
// time, not a computation every reader repeats.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("access requests: sweep", "err", err)
			}
		}
	}
}
