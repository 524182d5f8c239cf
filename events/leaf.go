package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeafSource is the source the hub's AUDIT stream reads a leaf's AUDIT
// stream through: the stream of the same name in the leaf's JetStream
// domain, reached across the leaf node connection.
func LeafSource(leafDomain string) *jetstream.StreamSource {
	return &jetstream.StreamSource{
		Name:     AuditStream,
		External: &jetstream.ExternalStream{APIPrefix: "$JS." + leafDomain + ".API"},
	}
}

// EnsureLeafSourced makes the AUDIT stream of hub (a JetStream context of
// the hub's domain, jetstream.NewWithDomain) source the AUDIT stream of
// leafDomain, unless it already does. Sourcing keeps its place in the
// leaf's stream, so after a cut the hub resumes where it stopped: every
// event arrives once. It reports whether the stream was changed.
func EnsureLeafSourced(ctx context.Context, hub jetstream.JetStream, leafDomain string) (bool, error) {
	if err := ValidToken(leafDomain); err != nil {
		return false, fmt.Errorf("events: leaf domain: %w", err)
	}
	s, err := hub.Stream(ctx, AuditStream)
	if err != nil {
		return false, fmt.Errorf("events: hub stream %s: %w", AuditStream, err)
	}
	cfg := s.CachedInfo().Config
	want := LeafSource(leafDomain)
	for _, src := range cfg.Sources {
		if src.Name == want.Name && src.External != nil && src.External.APIPrefix == want.External.APIPrefix {
			return false, nil
		}
	}
	cfg.Sources = append(cfg.Sources, want)
	if _, err := hub.UpdateStream(ctx, cfg); err != nil {
		return false, fmt.Errorf("events: add leaf %s as a source of hub stream %s: %w", leafDomain, AuditStream, err)
	}
	return true, nil
}

// KeepLeafSourced calls EnsureLeafSourced until ctx ends: every retry
// interval while the hub cannot be reached or has no AUDIT stream yet,
// then every check interval, so that a source removed (a hub stream made
// again) comes back. Failures are logged, never fatal: the leaf audits
// locally whatever the hub does.
func KeepLeafSourced(ctx context.Context, hub jetstream.JetStream, leafDomain string, log *slog.Logger, retry, check time.Duration) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if retry <= 0 {
		retry = 2 * time.Second
	}
	if check <= 0 {
		check = time.Minute
	}
	failing := false
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		changed, err := EnsureLeafSourced(cctx, hub, leafDomain)
		cancel()
		wait := check
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			wait = retry
			if !failing || !errors.Is(err, context.DeadlineExceeded) {
				log.Warn("leaf: the hub's AUDIT stream does not source this leaf yet; retrying", "domain", leafDomain, "err", err)
			}
			failing = true
		case changed:
			log.Info("leaf: the hub's AUDIT stream now sources this leaf's", "domain", leafDomain)
			failing = false
		default:
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
