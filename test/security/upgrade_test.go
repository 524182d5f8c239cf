package security

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// lastSeq is the last sequence of a stream.
func lastSeq(t testing.TB, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// A data dir written while the event plane was open (no identities,
// streams without deny flags) starts with every lock on, and no event is
// lost or rewritten.
func TestUpgradeFromAnOpenEventPlane(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "data", "nats")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// What the previous version left: an open server, streams as it made
	// them, a user in STATE, audit events.
	old, err := natsserver.Start(natsserver.Options{StoreDir: store, Listen: natsserver.InProcessOnly})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := old.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	for _, cfg := range []jetstream.StreamConfig{events.AuditStreamConfig(events.StreamOptions{}), events.StateStreamConfig(events.StreamOptions{})} {
		cfg.DenyDelete, cfg.DenyPurge = false, false
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	st, err := state.Open(ctx, js, "faults")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateUser(ctx, state.Actor{User: "local:admin"}, state.NewUser{Name: "carol", Roles: []string{"access"}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	pub, err := events.NewPublisher(js, "faults")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		ev := &events.Query{Session: events.Session{SID: "01OLDSESSION", EI: uint64(i)}, Query: fmt.Sprintf("SELECT %d", i)}
		if err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	_ = pub.Close(ctx)
	auditN, stateN := lastSeq(t, js, events.AuditStream), lastSeq(t, js, events.StateStream)
	auditDigest, stateDigest := streamDigest(t, js, events.AuditStream, auditN), streamDigest(t, js, events.StateStream, stateN)
	old.Shutdown()

	w := newWorldOn(t, dir)
	for _, p := range natsserver.Parts {
		fi, err := os.Stat(w.creds.SeedFile(p))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s seed after the upgrade: %v %v", p, fi, err)
		}
	}
	if _, err := nats.Connect("tls://"+w.natsAddr, nats.RootCAs(filepath.Join(w.creds.Dir, natsserver.TLSCertFile)), nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("anonymous connection accepted after the upgrade")
	}
	_, bjs, _ := w.as(natsserver.Auditor)
	for _, name := range []string{events.AuditStream, events.StateStream} {
		s, err := bjs.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if c := s.CachedInfo().Config; !c.DenyDelete || !c.DenyPurge {
			t.Fatalf("%s after the upgrade: deny_delete %v deny_purge %v", name, c.DenyDelete, c.DenyPurge)
		}
	}
	// Every old event is there, unchanged, at its sequence (the upgraded
	// process appends its own after them).
	if streamDigest(t, bjs, events.AuditStream, auditN) != auditDigest {
		t.Fatal("AUDIT's old events changed in the upgrade")
	}
	if streamDigest(t, bjs, events.StateStream, stateN) != stateDigest {
		t.Fatal("STATE's old events changed in the upgrade")
	}
	if out, err := w.tollgate("users", "ls"); err != nil || !strings.Contains(out, "carol") {
		t.Fatalf("users ls after the upgrade: %v\n%s", err, out)
	}
	if err := w.query(w.userCert, w.userKey, "SELECT 'after the upgrade'"); err != nil {
		t.Fatal(err)
	}
}

// streamDigest is a digest of the first n messages of a stream, each with
// its sequence and subject.
func streamDigest(t testing.TB, js jetstream.JetStream, name string, n uint64) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for seq := uint64(1); seq <= n; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("%s seq %d: %v", name, seq, err)
		}
		fmt.Fprintf(h, "%d %s %x\n", seq, m.Subject, sha256.Sum256(m.Data))
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
