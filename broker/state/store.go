package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// Errors commands return, wrapped with what they concern; test with
// errors.Is.
var (
	ErrExists   = errors.New("already exists")
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid")
	ErrInUse    = errors.New("in use")
	// ErrConflict means other writers changed the same aggregate on every
	// attempt; nothing was written and the command may be retried.
	ErrConflict = errors.New("state: the aggregate kept changing under concurrent writers; nothing was written, try again")
)

// maxAttempts bounds how often a command retries after losing a race.
const maxAttempts = 10

// Store is the broker's view of the control plane: the projection plus the
// commands that change it, and the private CREDENTIALS bucket.
type Store struct {
	*Projection
	js      jetstream.JetStream
	stream  jetstream.Stream
	cluster string
	credsKV jetstream.KeyValue
	beatsKV jetstream.KeyValue

	// beforeAppend, when set, runs between validation and append; tests
	// use it to make another writer win the race deterministically.
	beforeAppend func(attempt int)
	conflicts    atomic.Uint64
}

// Open replays STATE into a projection that then follows the stream until
// ctx is done or Close is called, and opens (creating if needed) the
// CREDENTIALS and DB_HEARTBEATS buckets with the replicas of STATE. The
// STATE stream must exist (events.EnsureStreams). cluster names the
// cluster in the events the commands write.
func Open(ctx context.Context, js jetstream.JetStream, cluster string) (*Store, error) {
	if err := events.ValidToken(cluster); err != nil {
		return nil, fmt.Errorf("state: cluster name: %w", err)
	}
	stream, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		return nil, fmt.Errorf("state: stream %s: %w (create it with events.EnsureStreams)", events.StateStream, err)
	}
	replicas := stream.CachedInfo().Config.Replicas
	creds, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      CredentialsBucket,
		Description: "Password and invite hashes by user; private to the broker, never exported",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("state: key-value bucket %s: %w", CredentialsBucket, err)
	}
	beats, err := heartbeatsBucket(ctx, js, replicas)
	if err != nil {
		return nil, err
	}
	p, err := Follow(ctx, js)
	if err != nil {
		return nil, err
	}
	return &Store{Projection: p, js: js, stream: stream, cluster: cluster, credsKV: creds, beatsKV: beats}, nil
}

// Conflicts counts appends that lost a race and were retried.
func (s *Store) Conflicts() uint64 { return s.conflicts.Load() }

// Cluster is the cluster name the store writes into events.
func (s *Store) Cluster() string { return s.cluster }

// change validates and appends one event to subj. build runs with the
// projection read-locked and returns the event to append, or nil when there
// is nothing to change. The append expects subj's last sequence to be the
// one build saw; when another writer got there first the projection catches
// up with that write and build runs again. On success change returns once
// the projection has applied the event, so the caller reads its own write.
func (s *Store) change(ctx context.Context, by Actor, subj string, build func() (events.Event, error)) (events.Event, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		s.mu.RLock()
		ev, err := build()
		expected := s.lastSeq(subj)
		s.mu.RUnlock()
		if err != nil || ev == nil {
			return nil, err
		}
		h := ev.Header()
		h.User, h.Roles = by.User, by.Roles
		if err := events.Stamp(ev, s.cluster); err != nil {
			return nil, err
		}
		data, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("state: encode %s: %w", h.Type, err)
		}
		if s.beforeAppend != nil {
			s.beforeAppend(attempt)
		}
		ack, err := s.publish(ctx, subj, data, h.ID, expected)
		if isConflict(err) {
			s.conflicts.Add(1)
			if err := s.catchUp(ctx, subj); err != nil {
				return nil, err
			}
			// Spread retries so two brokers do not collide in lockstep.
			if err := sleep(ctx, time.Duration(rand.Int64N(int64(time.Millisecond)<<min(attempt, 6)))); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("state: append %s to %s: %w", h.Type, subj, err)
		}
		if err := s.WaitFor(ctx, ack.Sequence); err != nil {
			return nil, fmt.Errorf("state: %s stored at sequence %d but not yet applied: %w", h.Type, ack.Sequence, err)
		}
		return ev, nil
	}
	return nil, fmt.Errorf("%w (%s, %d attempts)", ErrConflict, subj, maxAttempts)
}

// publish appends with the expected last subject sequence. A failure that
// may have stored the message anyway (a timeout) is retried with the same
// message id, so JetStream stores it once and returns the first ack.
func (s *Store) publish(ctx context.Context, subj string, data []byte, id string, expected uint64) (*jetstream.PubAck, error) {
	var err error
	for try := 0; try < 3; try++ {
		var ack *jetstream.PubAck
		// No Nats-Expected-Stream: state.> can only belong to STATE, and
		// every header is stored and parsed again on each replay.
		ack, err = s.js.Publish(ctx, subj, data,
			jetstream.WithMsgID(id),
			jetstream.WithExpectLastSequencePerSubject(expected))
		if err == nil || isConflict(err) || ctx.Err() != nil {
			return ack, err
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) {
			return nil, err // the server answered: retrying will not help
		}
		if err := sleep(ctx, time.Duration(try+1)*50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return nil, err
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// catchUp waits until the projection has applied the last message stored
// under subj, the one that beat us.
func (s *Store) catchUp(ctx context.Context, subj string) error {
	m, err := s.stream.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		return fmt.Errorf("state: read last message of %s: %w", subj, err)
	}
	return s.WaitFor(ctx, m.Sequence)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
