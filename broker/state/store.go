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
	js        jetstream.JetStream
	stream    jetstream.Stream
	cluster   string
	credsKV   jetstream.KeyValue
	beatsKV   jetstream.KeyValue
	snapshots jetstream.ObjectStore

	// beforeAppend, when set, runs between validation and append; tests
	// use it to make another writer win the race deterministically.
	beforeAppend func(attempt int)
	conflicts    atomic.Uint64
}

// OpenOption configures Open.
type OpenOption func(*openConfig)

type openConfig struct{ snapshotEvery uint64 }

// SnapshotEvery sets how many new events make the store write a snapshot
// (DefaultSnapshotEvery); 0 turns automatic snapshots off.
func SnapshotEvery(n uint64) OpenOption { return func(c *openConfig) { c.snapshotEvery = n } }

// Open replays STATE into a projection (from the latest snapshot, if any)
// that then follows the stream until ctx is done or Close is called, and
// opens (creating if needed) the CREDENTIALS and DB_HEARTBEATS buckets and
// the STATE_SNAPSHOTS object store with the replicas of STATE. The STATE
// stream must exist (events.EnsureStreams). cluster names the cluster in
// the events the commands write.
func Open(ctx context.Context, js jetstream.JetStream, cluster string, opts ...OpenOption) (*Store, error) {
	cfg := openConfig{snapshotEvery: DefaultSnapshotEvery}
	for _, o := range opts {
		o(&cfg)
	}
	if err := events.ValidToken(cluster); err != nil {
		return nil, fmt.Errorf("state: cluster name: %w", err)
	}
	stream, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		return nil, fmt.Errorf("state: stream %s: %w (create it with events.EnsureStreams)", events.StateStream, err)
	}
	creds, beats, snaps, err := EnsureBuckets(ctx, js)
	if err != nil {
		return nil, err
	}
	p, err := Follow(ctx, js)
	if err != nil {
		return nil, err
	}
	s := &Store{Projection: p, js: js, stream: stream, cluster: cluster, credsKV: creds, beatsKV: beats, snapshots: snaps}
	if cfg.snapshotEvery > 0 {
		go s.snapshotLoop(cfg.snapshotEvery)
	}
	return s, nil
}

// Conflicts counts appends that lost a race and were retried.
func (s *Store) Conflicts() uint64 { return s.conflicts.Load() }

// Cluster is the cluster name the store writes into events.
func (s *Store) Cluster() string { return s.cluster }

// change validates and appends one event to subj. It asks the stream for
// the last sequence stored under subj, waits until the projection has
// applied it, and runs build with the projection read-locked; build returns
// the event to append, or nil when there is nothing to change. The append
// expects subj's last sequence to still be that one: when another writer
// got there first, the whole round runs again against the newer state. On
// success change returns once the projection has applied the event, so the
// caller reads its own write.
//
// The last sequence comes from the stream rather than from the projection
// so that replay does not have to remember one sequence for every subject
// ever written (deleted users, every lock and token): that map was a tenth
// of the replay's CPU and memory, and commands are rare next to replays.
func (s *Store) change(ctx context.Context, by Actor, subj string, build func() (events.Event, error)) (events.Event, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		expected, err := s.lastSubjectSeq(ctx, subj)
		if err != nil {
			return nil, err
		}
		if err := s.WaitFor(ctx, expected); err != nil {
			return nil, fmt.Errorf("state: catching up with %s at sequence %d: %w", subj, expected, err)
		}
		s.mu.RLock()
		ev, err := build()
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

// lastSubjectSeq is the sequence of the last message stored under subj, 0
// when there is none.
func (s *Store) lastSubjectSeq(ctx context.Context, subj string) (uint64, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("state: last message of %s: %w", subj, err)
	}
	return m.Sequence, nil
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
