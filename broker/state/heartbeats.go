package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// heartbeatsBucket binds to DB_HEARTBEATS, creating it with the replicas of
// STATE if no broker has yet. It never updates an existing bucket: an agent
// must not change what the broker configured.
func heartbeatsBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, HeartbeatsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		cfg := heartbeatsConfig()
		cfg.Replicas = replicas
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, HeartbeatsBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("state: key-value bucket %s: %w", HeartbeatsBucket, err)
	}
	return kv, nil
}

func heartbeatsConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      HeartbeatsBucket,
		Description: "Latest db.heartbeat of each database, by database name",
		History:     1,
		// A heartbeat older than a day says nothing any TTL could use; the
		// bucket forgets it so deleted databases leave nothing behind.
		TTL:     24 * time.Hour,
		Storage: jetstream.FileStorage,
	}
}

func (p *Projection) followHeartbeats(w jetstream.KeyWatcher, ready chan struct{}) {
	defer func() { _ = w.Stop() }()
	readyOnce := sync.OnceFunc(func() { close(ready) })
	defer readyOnce()
	for e := range w.Updates() {
		if e == nil {
			readyOnce() // initial values delivered
			continue
		}
		p.mu.Lock()
		switch e.Operation() {
		case jetstream.KeyValuePut:
			var hb events.DBHeartbeat
			if err := json.Unmarshal(e.Value(), &hb); err != nil {
				p.skipped++
				p.lastErr = fmt.Errorf("heartbeat %s: %w", e.Key(), err)
			} else {
				p.beats[e.Key()] = hb
			}
		default:
			delete(p.beats, e.Key())
		}
		close(p.beatCh)
		p.beatCh = make(chan struct{})
		p.mu.Unlock()
	}
}

// waitBeat blocks until the heartbeat of database key has id.
func (p *Projection) waitBeat(ctx context.Context, key, id string) error {
	for {
		p.mu.RLock()
		got, ch, closed := p.beats[key].ID == id, p.beatCh, p.closed
		p.mu.RUnlock()
		switch {
		case got:
			return nil
		case closed:
			return ErrClosed
		}
		select {
		case <-ch:
		case <-p.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *Projection) withBeat(d Database) Database {
	d = d.clone()
	if hb, ok := p.beats[escapeKey(d.Name)]; ok {
		d.LastHeartbeat, d.HeartbeatHost = hb.Time, hb.HostID
	}
	return d
}
