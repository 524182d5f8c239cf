package events

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A data dir written before the streams denied delete and purge is
// upgraded in place by EnsureStreams: the flags are on, every message is
// still there, and deleting or purging is refused from then on.
func TestEnsureStreamsUpgradesDenyFlags(t *testing.T) {
	srv := runServer(t, t.TempDir(), -1)
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); srv.Shutdown(); srv.WaitForShutdown() })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// The streams as the previous version made them.
	for _, cfg := range []jetstream.StreamConfig{AuditStreamConfig(StreamOptions{}), StateStreamConfig(StreamOptions{})} {
		cfg.DenyDelete, cfg.DenyPurge = false, false
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	const n = 20
	for i := range n {
		if _, err := js.Publish(ctx, fmt.Sprintf("audit.c1.s%d.db.session.query", i), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, fmt.Sprintf("state.user.u%d", i), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}

	if err := EnsureStreams(ctx, js, StreamOptions{}); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	for _, name := range []string{AuditStream, StateStream} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info := s.CachedInfo()
		if !info.Config.DenyDelete || !info.Config.DenyPurge {
			t.Fatalf("%s after upgrade: deny_delete %v, deny_purge %v", name, info.Config.DenyDelete, info.Config.DenyPurge)
		}
		if info.State.Msgs != n || info.State.FirstSeq != 1 || info.State.LastSeq != n {
			t.Fatalf("%s after upgrade holds %d messages, seq %d..%d; want %d, 1..%d", name, info.State.Msgs, info.State.FirstSeq, info.State.LastSeq, n, n)
		}
		if err := s.DeleteMsg(ctx, 3); err == nil {
			t.Fatalf("%s: deleting a message succeeded", name)
		}
		if err := s.SecureDeleteMsg(ctx, 4); err == nil {
			t.Fatalf("%s: erasing a message succeeded", name)
		}
		if err := s.Purge(ctx); err == nil {
			t.Fatalf("%s: purge succeeded", name)
		}
		if err := s.Purge(ctx, jetstream.WithPurgeKeep(1)); err == nil {
			t.Fatalf("%s: purge keeping one succeeded", name)
		}
		// Nor can the flags be turned off again.
		cfg := info.Config
		cfg.DenyDelete, cfg.DenyPurge = false, false
		if _, err := js.UpdateStream(ctx, cfg); err == nil {
			t.Fatalf("%s: turning the deny flags off succeeded", name)
		}
		info, err = s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != n {
			t.Fatalf("%s holds %d messages after refused deletes, want %d", name, info.State.Msgs, n)
		}
	}
	// Idempotent on the upgraded streams.
	if err := EnsureStreams(ctx, js, StreamOptions{}); err != nil {
		t.Fatalf("second EnsureStreams: %v", err)
	}
}
