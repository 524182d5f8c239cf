package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LargeFieldsBucket is the JetStream object store that keeps the full values
// of event fields too large for one message, one object per event id.
const LargeFieldsBucket = "AUDIT_LARGE"

// DefaultDuplicates is the window in which JetStream drops a message whose
// Nats-Msg-Id it has already stored. It must be longer than any retry of a
// publish that timed out, so a retried event is stored once.
const DefaultDuplicates = 2 * time.Minute

// StreamOptions sizes the streams EnsureStreams creates.
type StreamOptions struct {
	// Replicas of every stream and of the object store: 1, or 3 or 5 on a
	// cluster. Zero means 1.
	Replicas int
	// AuditMaxAge and AuditMaxBytes bound the AUDIT stream (limits
	// retention) and the large-field object store; zero means unbounded.
	AuditMaxAge   time.Duration
	AuditMaxBytes int64
	// Duplicates is the deduplication window of both streams; zero means
	// DefaultDuplicates.
	Duplicates time.Duration
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Duplicates == 0 {
		o.Duplicates = DefaultDuplicates
	}
	return o
}

func (o StreamOptions) validate() error {
	var errs []error
	switch o.Replicas {
	case 1, 3, 5:
	default:
		errs = append(errs, fmt.Errorf("replicas: %d (want 1, 3 or 5)", o.Replicas))
	}
	if o.AuditMaxAge < 0 {
		errs = append(errs, fmt.Errorf("audit max age: %s is negative", o.AuditMaxAge))
	}
	if o.AuditMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("audit max bytes: %d is negative", o.AuditMaxBytes))
	}
	if o.Duplicates < 0 {
		errs = append(errs, fmt.Errorf("duplicates window: %s is negative", o.Duplicates))
	}
	if o.AuditMaxAge > 0 && o.Duplicates > o.AuditMaxAge {
		errs = append(errs, fmt.Errorf("duplicates window %s is longer than audit max age %s", o.Duplicates, o.AuditMaxAge))
	}
	return errors.Join(errs...)
}

// AuditStreamConfig is the configuration EnsureStreams gives the AUDIT stream.
func AuditStreamConfig(o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	maxBytes := o.AuditMaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name:        AuditStream,
		Description: "Tollgate audit events: audit.<cluster>.<sid>.<type>",
		Subjects:    []string{AuditSubjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      o.AuditMaxAge,
		MaxBytes:    maxBytes,
		// Old events make room for new ones: refusing new events would stop
		// every strict session once the stream is full.
		Discard:    jetstream.DiscardOld,
		Duplicates: o.Duplicates,
		Replicas:   o.Replicas,
		// Direct gets let exporters and replay read single events from any
		// replica without going through the leader.
		AllowDirect: true,
		// No one erases an event: JetStream refuses message deletes and
		// purges, and refuses to turn these flags off again.
		DenyDelete: true,
		DenyPurge:  true,
	}
}

// StateStreamConfig is the configuration EnsureStreams gives the STATE stream.
func StateStreamConfig(o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        StateStream,
		Description: "Tollgate control plane: state.<aggregate>.<id>, event-sourced, kept forever",
		Subjects:    []string{StateSubjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      0,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		// A full state stream must refuse appends rather than forget history.
		Discard:     jetstream.DiscardNew,
		Duplicates:  o.Duplicates,
		Replicas:    o.Replicas,
		AllowDirect: true,
		DenyDelete:  true,
		DenyPurge:   true,
	}
}

// LargeFieldsConfig is the configuration EnsureStreams gives the object
// store of large event fields; objects live as long as their events.
func LargeFieldsConfig(o StreamOptions) jetstream.ObjectStoreConfig {
	o = o.withDefaults()
	return jetstream.ObjectStoreConfig{
		Bucket:      LargeFieldsBucket,
		Description: "Full values of audit event fields truncated to fit a message, by event id",
		TTL:         o.AuditMaxAge,
		// No byte limit: the bucket discards new objects when full, which
		// would refuse the events they belong to.
		Storage:  jetstream.FileStorage,
		Replicas: o.Replicas,
	}
}

// EnsureStreams creates the AUDIT and STATE streams and the large-field
// object store, or updates them to o. It is idempotent: every process that
// publishes may call it at start. Streams made by an earlier version get
// the deny-delete and deny-purge flags by this update, keeping every
// message.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return fmt.Errorf("events: stream options: %w", err)
	}
	for _, cfg := range []jetstream.StreamConfig{AuditStreamConfig(o), StateStreamConfig(o)} {
		// A hub's AUDIT stream sources its leaves' (EnsureLeafSourced);
		// updating it must not drop them.
		if s, err := js.Stream(ctx, cfg.Name); err == nil {
			cfg.Sources = s.CachedInfo().Config.Sources
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("events: create or update stream %s (subjects %v, replicas %d): %w", cfg.Name, cfg.Subjects, cfg.Replicas, err)
		}
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, LargeFieldsConfig(o)); err != nil {
		return fmt.Errorf("events: create or update object store %s: %w", LargeFieldsBucket, err)
	}
	return nil
}
