package state

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// Beater writes an agent's heartbeats into DB_HEARTBEATS. It is all an
// agent writes of the control plane: STATE itself is the broker's, and an
// agent's NATS identity may only read it.
type Beater struct {
	p       *Projection
	kv      jetstream.KeyValue
	cluster string
}

// NewBeater binds DB_HEARTBEATS, which the broker made (EnsureBuckets), for
// the databases of projection p.
func NewBeater(ctx context.Context, js jetstream.JetStream, p *Projection, cluster string) (*Beater, error) {
	kv, err := js.KeyValue(ctx, HeartbeatsBucket)
	if err != nil {
		return nil, fmt.Errorf("state: key-value bucket %s: %w", HeartbeatsBucket, err)
	}
	return &Beater{p: p, kv: kv, cluster: cluster}, nil
}

// Beat records that hostID still serves database name, and returns once
// the projection has seen it.
func (b *Beater) Beat(ctx context.Context, by Actor, name, hostID string) error {
	return heartbeat(ctx, b.p, b.kv, b.cluster, by, name, hostID)
}

func heartbeat(ctx context.Context, p *Projection, kv jetstream.KeyValue, cluster string, by Actor, name, hostID string) error {
	if _, ok := p.Database(name); !ok {
		return fmt.Errorf("database %s: %w", name, ErrNotFound)
	}
	hb := &events.DBHeartbeat{Service: name, HostID: hostID}
	hb.User, hb.Roles = by.User, by.Roles
	if err := events.Stamp(hb, cluster); err != nil {
		return err
	}
	data, err := json.Marshal(hb)
	if err != nil {
		return err
	}
	key := escapeKey(name)
	if _, err := kv.Put(ctx, key, data); err != nil {
		return fmt.Errorf("state: heartbeat of %s: %w", name, err)
	}
	// Wait for the watcher so the caller reads its own heartbeat.
	if err := p.waitBeat(ctx, key, hb.ID); err != nil {
		return fmt.Errorf("state: heartbeat of %s stored but not yet seen: %w", name, err)
	}
	return nil
}

// EnsureBuckets makes the control plane's buckets beside STATE, with its
// replicas: CREDENTIALS (the broker's alone), DB_HEARTBEATS and the
// STATE_SNAPSHOTS object store. The broker's identity calls it before any
// part that may only read them starts.
func EnsureBuckets(ctx context.Context, js jetstream.JetStream) (creds, beats jetstream.KeyValue, snaps jetstream.ObjectStore, err error) {
	stream, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("state: stream %s: %w (create it with events.EnsureStreams)", events.StateStream, err)
	}
	replicas := stream.CachedInfo().Config.Replicas
	creds, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      CredentialsBucket,
		Description: "Password and invite hashes by user; private to the broker, never exported",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("state: key-value bucket %s: %w", CredentialsBucket, err)
	}
	if beats, err = heartbeatsBucket(ctx, js, replicas); err != nil {
		return nil, nil, nil, err
	}
	if snaps, err = js.CreateOrUpdateObjectStore(ctx, snapshotsConfig(replicas)); err != nil {
		return nil, nil, nil, fmt.Errorf("state: object store %s: %w", SnapshotsBucket, err)
	}
	return creds, beats, snaps, nil
}
