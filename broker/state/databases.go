package state

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/protocol"
)

// DefaultHeartbeatTTL is how long a database stays live without a heartbeat
// when its registration does not say.
const DefaultHeartbeatTTL = 90 * time.Second

// NewDatabase is what RegisterDatabase needs.
type NewDatabase struct {
	Name     string
	Protocol string
	URI      string
	Labels   map[string]string
	HostID   string
	// AgentAddr is where clients reach the agent (host:port).
	AgentAddr string
	// HeartbeatTTL defaults to DefaultHeartbeatTTL.
	HeartbeatTTL time.Duration
	// Exclusive refuses (ErrInUse) a name registered to another host
	// whose heartbeat is still live: an agent registering through the API
	// must not take over a database another agent serves.
	Exclusive bool
}

// RegisterDatabase records a database an agent serves (db.create) and its
// first heartbeat. Registering again with the same details writes only the
// heartbeat; with new details (labels, URI, another host), a new db.create.
func (s *Store) RegisterDatabase(ctx context.Context, by Actor, nd NewDatabase) (Database, error) {
	if err := ValidDatabaseName(nd.Name); err != nil {
		return Database{}, invalid("%v", err)
	}
	if !protocol.Known(nd.Protocol) {
		return Database{}, invalid("database %s: protocol %q (want %s)", nd.Name, nd.Protocol, protocol.List())
	}
	if nd.URI == "" {
		return Database{}, invalid("database %s: empty uri", nd.Name)
	}
	if nd.HostID == "" {
		return Database{}, invalid("database %s: empty host id", nd.Name)
	}
	for k := range nd.Labels {
		if k == "" {
			return Database{}, invalid("database %s: empty label key", nd.Name)
		}
	}
	if nd.HeartbeatTTL < 0 {
		return Database{}, invalid("database %s: negative heartbeat ttl", nd.Name)
	}
	if nd.HeartbeatTTL == 0 {
		nd.HeartbeatTTL = DefaultHeartbeatTTL
	}
	_, err := s.change(ctx, by, subject(AggDatabase, nd.Name), func() (events.Event, error) {
		if cur, ok := s.dbs[nd.Name]; ok && nd.Exclusive && cur.HostID != nd.HostID {
			if d := s.withBeat(cur); !d.Expired(time.Now()) {
				return nil, fmt.Errorf("host %s cannot register database %s: it is registered to host %s, whose heartbeat is live until %s (remove it with tollgate db rm, or stop that agent): %w",
					nd.HostID, nd.Name, cur.HostID, d.Expires().UTC().Format(time.RFC3339), ErrInUse)
			}
		}
		if cur, ok := s.dbs[nd.Name]; ok && cur.Protocol == nd.Protocol && cur.URI == nd.URI &&
			cur.HostID == nd.HostID && cur.AgentAddr == nd.AgentAddr && cur.HeartbeatTTL == nd.HeartbeatTTL && maps.Equal(cur.Labels, nd.Labels) {
			return nil, nil
		}
		return &events.DBCreate{Service: nd.Name, Protocol: nd.Protocol, URI: nd.URI, Labels: maps.Clone(nd.Labels),
			HostID: nd.HostID, AgentAddr: nd.AgentAddr, HeartbeatTTLNs: int64(nd.HeartbeatTTL)}, nil
	})
	if err != nil {
		return Database{}, err
	}
	if err := s.Heartbeat(ctx, by, nd.Name, nd.HostID); err != nil {
		return Database{}, err
	}
	d, _ := s.Database(nd.Name)
	return d, nil
}

// Heartbeat records that hostID still serves database name. It is stored
// latest-only in DB_HEARTBEATS, not in STATE (see the package comment), and
// returns once the projection has seen it.
func (s *Store) Heartbeat(ctx context.Context, by Actor, name, hostID string) error {
	return heartbeat(ctx, s.Projection, s.beatsKV, s.cluster, by, name, hostID)
}

// DeleteDatabase removes a database and its heartbeat.
func (s *Store) DeleteDatabase(ctx context.Context, by Actor, name string) error {
	_, err := s.change(ctx, by, subject(AggDatabase, name), func() (events.Event, error) {
		if _, ok := s.dbs[name]; !ok {
			return nil, fmt.Errorf("database %s: %w", name, ErrNotFound)
		}
		return &events.DBDelete{Service: name}, nil
	})
	if err != nil {
		return err
	}
	if err := s.beatsKV.Delete(ctx, escapeKey(name)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("state: database %s deleted, but removing its heartbeat failed: %w", name, err)
	}
	return nil
}
