package requests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// errNothing stops an append that has nothing to write.
var errNothing = errors.New("nothing to change")

// maxAttempts bounds how often an append retries after losing a race.
const maxAttempts = 10

// append validates with build against the request's current state (nil
// when it does not exist) and appends the event build returns, expecting
// the subject's last sequence to be the one build saw; on a lost race it
// catches up and tries again. It returns once the event is applied here.
func (s *Service) append(ctx context.Context, by state.Actor, id string, build func(r *Request) (events.Event, error)) error {
	if err := events.ValidToken(id); err != nil {
		return fmt.Errorf("%w: access request id: %v", state.ErrInvalid, err)
	}
	subj := events.StateSubject(state.AggAccessRequest, id)
	s.mu.RLock()
	_, known := s.reqs[id]
	s.mu.RUnlock()
	if !known {
		// Another broker may have created it a moment ago: catch up with
		// the subject before saying it does not exist.
		if err := s.catchUp(ctx, subj); err != nil {
			return err
		}
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		s.mu.RLock()
		var cur *Request
		if r, ok := s.reqs[id]; ok {
			c := r.clone()
			cur = &c
		}
		expected := s.subjSeq[subj]
		s.mu.RUnlock()
		ev, err := build(cur)
		if err != nil {
			return err
		}
		h := ev.Header()
		h.User, h.Roles = by.User, by.Roles
		if err := events.Stamp(ev, s.cluster); err != nil {
			return err
		}
		data, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		ack, err := s.js.Publish(ctx, subj, data, jetstream.WithMsgID(h.ID),
			jetstream.WithExpectStream(events.StateStream), jetstream.WithExpectLastSequencePerSubject(expected))
		if isConflict(err) {
			if err := s.catchUp(ctx, subj); err != nil {
				return err
			}
			jitter := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 6)))
			select {
			case <-time.After(jitter):
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("requests: append %s to %s: %w", h.Type, subj, err)
		}
		return s.waitFor(ctx, ack.Sequence)
	}
	return fmt.Errorf("%w (%s, %d attempts)", state.ErrConflict, subj, maxAttempts)
}

// catchUp waits until the projection applied the last message of subj,
// if there is one.
func (s *Service) catchUp(ctx context.Context, subj string) error {
	stream, err := s.js.Stream(ctx, events.StateStream)
	if err != nil {
		return err
	}
	m, err := stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("requests: read the last message of %s: %w", subj, err)
	}
	return s.waitFor(ctx, m.Sequence)
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
