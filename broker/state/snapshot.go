package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/events"
)

// STATE is kept forever, so a full replay grows with the cluster's age
// (about 9 µs of CPU per event here, server and client together). The
// projection is small next to its history, so the broker stores a copy of
// it now and then, and a starting projection loads the newest copy and
// replays only what came after. A snapshot is derived data: any snapshot
// that does not fit (another version of this code, a recreated stream, a
// sequence the stream does not have) is ignored and the stream replayed
// from the start, which is always correct.
const (
	// SnapshotsBucket is the object store holding the latest snapshot.
	SnapshotsBucket = "STATE_SNAPSHOTS"
	// DefaultSnapshotEvery is how many new events make the broker write a
	// new snapshot.
	DefaultSnapshotEvery = 100_000

	snapshotObject = "projection"
	// snapshotVersion changes whenever apply changes what an event means or
	// the projection's types change shape, so old snapshots are not loaded.
	snapshotVersion = 2
)

type snapshotFile struct {
	Version int
	// StreamCreated identifies the incarnation of STATE the snapshot was
	// taken from.
	StreamCreated  time.Time
	Seq            uint64
	Users          map[string]User
	RemovedUsers   map[string]time.Time
	Roles          map[string]access.Role
	Tokens         map[string]Token
	Databases      map[string]Database // registrations; heartbeats come from their bucket
	CAs            map[string]CA
	AccessRequests map[string]AccessRequest
	Locks          map[string]Lock
	Connectors     map[string]events.Connector
}

// FromScratch makes Follow replay the whole stream and ignore snapshots.
func FromScratch() FollowOption { return func(p *Projection) { p.noSnapshot = true } }

// SnapshotSeq is the sequence of the snapshot the projection started from,
// or of the last one it wrote; 0 when none.
func (p *Projection) SnapshotSeq() uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.snapSeq
}

// loadSnapshot installs the newest usable snapshot and returns its
// sequence, or 0 when there is none to use. Errors are reasons a snapshot
// could not be used; the caller replays from the start.
func (p *Projection) loadSnapshot(ctx context.Context, js jetstream.JetStream, info *jetstream.StreamInfo) (uint64, error) {
	obs, err := js.ObjectStore(ctx, SnapshotsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("snapshot bucket: %w", err)
	}
	oi, err := obs.GetInfo(ctx, snapshotObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	if v := oi.Metadata["version"]; v != strconv.Itoa(snapshotVersion) {
		return 0, fmt.Errorf("snapshot version %q, this code reads %d", v, snapshotVersion)
	}
	b, err := obs.GetBytes(ctx, snapshotObject)
	if err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	var f snapshotFile
	if err := json.Unmarshal(b, &f); err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	switch {
	case f.Version != snapshotVersion:
		return 0, fmt.Errorf("snapshot version %d, this code reads %d", f.Version, snapshotVersion)
	case !f.StreamCreated.Equal(info.Created):
		return 0, fmt.Errorf("snapshot of a stream created %s, %s was created %s", f.StreamCreated, info.Config.Name, info.Created)
	case f.Seq == 0 || f.Seq > info.State.LastSeq:
		return 0, fmt.Errorf("snapshot at sequence %d, stream ends at %d", f.Seq, info.State.LastSeq)
	case f.Seq+1 < info.State.FirstSeq:
		return 0, fmt.Errorf("snapshot at sequence %d, stream starts at %d", f.Seq, info.State.FirstSeq)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users = orEmpty(f.Users)
	p.removed = orEmpty(f.RemovedUsers)
	p.roles = orEmpty(f.Roles)
	p.tokens = orEmpty(f.Tokens)
	p.dbs = orEmpty(f.Databases)
	p.cas = orEmpty(f.CAs)
	p.requests = orEmpty(f.AccessRequests)
	p.locks = orEmpty(f.Locks)
	p.connectors = orEmpty(f.Connectors)
	p.seq, p.snapSeq = f.Seq, f.Seq
	return f.Seq, nil
}

func orEmpty[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return m
}

// writeSnapshot stores the projection as it is now.
func (p *Projection) writeSnapshot(ctx context.Context, obs jetstream.ObjectStore) (uint64, error) {
	p.mu.RLock()
	// apply replaces values and never changes them in place, so shallow
	// copies stay consistent after the lock is released.
	f := snapshotFile{
		Version:        snapshotVersion,
		StreamCreated:  p.streamCreated,
		Seq:            p.seq,
		Users:          maps.Clone(p.users),
		RemovedUsers:   maps.Clone(p.removed),
		Roles:          maps.Clone(p.roles),
		Tokens:         maps.Clone(p.tokens),
		Databases:      maps.Clone(p.dbs),
		CAs:            maps.Clone(p.cas),
		AccessRequests: maps.Clone(p.requests),
		Locks:          maps.Clone(p.locks),
		Connectors:     maps.Clone(p.connectors),
	}
	p.mu.RUnlock()
	if f.Seq == 0 {
		return 0, nil
	}
	b, err := json.Marshal(&f)
	if err != nil {
		return 0, fmt.Errorf("state: encode snapshot: %w", err)
	}
	_, err = obs.Put(ctx, jetstream.ObjectMeta{
		Name:        snapshotObject,
		Description: "Projection of STATE up to sequence " + strconv.FormatUint(f.Seq, 10),
		Metadata:    map[string]string{"version": strconv.Itoa(snapshotVersion), "seq": strconv.FormatUint(f.Seq, 10)},
	}, bytes.NewReader(b))
	if err != nil {
		return 0, fmt.Errorf("state: store snapshot at sequence %d: %w", f.Seq, err)
	}
	p.mu.Lock()
	p.snapSeq = max(p.snapSeq, f.Seq)
	p.mu.Unlock()
	return f.Seq, nil
}

func snapshotsConfig(replicas int) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      SnapshotsBucket,
		Description: "Latest snapshot of the STATE projection; derived data, safe to delete",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// WriteSnapshot stores the projection as it is now, so that brokers and
// agents starting later replay only what follows. It returns the sequence
// the snapshot covers.
func (s *Store) WriteSnapshot(ctx context.Context) (uint64, error) {
	return s.writeSnapshot(ctx, s.snapshots)
}

// snapshotCheck is how often the store looks whether a snapshot is due.
var snapshotCheck = 5 * time.Second

// snapshotLoop writes a snapshot whenever every events have been applied
// since the last one, until the store is closed.
func (s *Store) snapshotLoop(every uint64) {
	t := time.NewTicker(snapshotCheck)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		s.mu.RLock()
		due := s.seq >= s.snapSeq+every
		s.mu.RUnlock()
		if !due {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if _, err := s.WriteSnapshot(ctx); err != nil {
			s.mu.Lock()
			s.lastErr = err
			s.mu.Unlock()
		}
		cancel()
	}
}
