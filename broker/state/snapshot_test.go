package state

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A projection started from a snapshot plus the events after it equals one
// replayed from the start.
func TestSnapshotThenTail(t *testing.T) {
	srv := startServer(t, t.TempDir())
	st := srv.open(t)
	c := ctxT(t)
	populate(t, st)
	seq, err := st.WriteSnapshot(c)
	if err != nil || seq != st.Seq() {
		t.Fatalf("snapshot at %d (store at %d): %v", seq, st.Seq(), err)
	}
	// Changes after the snapshot: the tail.
	if _, err := st.UpdateUser(c, admin, "alice", func(u *User) error { u.Roles = []string{"access"}; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateLock(c, admin, NewLock{TargetSession: "s1"}); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteUser(c, admin, "bob"); err != nil {
		t.Fatal(err)
	}

	fromSnap, err := Follow(c, srv.connect(t))
	if err != nil {
		t.Fatal(err)
	}
	defer fromSnap.Close()
	if fromSnap.SnapshotSeq() != seq {
		t.Fatalf("started from snapshot %d, want %d", fromSnap.SnapshotSeq(), seq)
	}
	full, err := Follow(c, srv.connect(t), FromScratch())
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	if full.SnapshotSeq() != 0 {
		t.Fatal("FromScratch used a snapshot")
	}
	a, b, w := fromSnap.Snapshot(), full.Snapshot(), st.Snapshot()
	if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(a, w) {
		t.Fatalf("snapshot+tail differs from full replay:\n%+v\n%+v", a, b)
	}
	if _, ok := a.Users["bob"]; ok || len(a.Locks) != 2 {
		t.Fatalf("tail not applied: %+v", a)
	}
	// The store restarted from the snapshot accepts commands.
	st2 := srv.open(t)
	if st2.SnapshotSeq() != seq {
		t.Fatalf("store started from %d", st2.SnapshotSeq())
	}
	if _, err := st2.UpdateUser(c, admin, "alice", func(u *User) error { u.Roles = []string{"access", "dev"}; return nil }); err != nil {
		t.Fatal(err)
	}
}

// A snapshot this code cannot trust is ignored, and the stream replayed.
func TestSnapshotIgnoredWhenItDoesNotFit(t *testing.T) {
	srv := startServer(t, t.TempDir())
	st := srv.open(t)
	c := ctxT(t)
	populate(t, st)
	want := st.Snapshot()
	obs, err := st.js.ObjectStore(c, SnapshotsBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		meta map[string]string
		body string
		why  string
	}{
		{map[string]string{"version": "99"}, `{}`, "snapshot version"},
		{map[string]string{"version": "1"}, `{"Version":1,"Seq":3}`, "snapshot version"},
		{map[string]string{"version": "2"}, `{"Version":2,"Seq":3,"StreamCreated":"2001-01-01T00:00:00Z"}`, "stream created"},
		{map[string]string{"version": "2"}, `{"Version":2,"Seq":999999}`, "stream created"},
		{map[string]string{"version": "2"}, `not json`, "snapshot"},
	} {
		if _, err := obs.Put(c, jetstream.ObjectMeta{Name: snapshotObject, Metadata: tc.meta}, bytes.NewReader([]byte(tc.body))); err != nil {
			t.Fatal(err)
		}
		p, err := Follow(c, srv.connect(t))
		if err != nil {
			t.Fatal(err)
		}
		_, lastErr := p.Stats()
		if p.SnapshotSeq() != 0 || lastErr == nil || !strings.Contains(lastErr.Error(), tc.why) {
			t.Errorf("%s: started from %d, last error %v", tc.body, p.SnapshotSeq(), lastErr)
		}
		if got := p.Snapshot(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: replay differs", tc.body)
		}
		p.Close()
	}
}

func TestAutomaticSnapshots(t *testing.T) {
	old := snapshotCheck
	snapshotCheck = 20 * time.Millisecond
	defer func() { snapshotCheck = old }()
	srv := startServer(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := Open(ctx, srv.connect(t), "test", SnapshotEvery(5))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	populate(t, st)
	c := ctxT(t)
	for st.SnapshotSeq() < 5 {
		if err := sleep(c, 10*time.Millisecond); err != nil {
			t.Fatalf("no snapshot written; store at %d", st.Seq())
		}
	}
}
