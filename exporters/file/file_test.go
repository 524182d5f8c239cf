package file_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/file"
	"github.com/tollgate-db/tollgate/exporters/format"
	"github.com/tollgate-db/tollgate/exporters/internal/exportertest"
	"github.com/tollgate-db/tollgate/exporters/ocsfcheck"
	"github.com/tollgate-db/tollgate/schemas"
)

// lines reads every JSON line of path and its rotated files.
func lines(t *testing.T, path string) (ids map[string]int, files int, raw [][]byte) {
	t.Helper()
	ids = map[string]int{}
	all := append(file.Rotated(path), path)
	for _, p := range all {
		f, err := os.Open(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		files++
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 8<<20)
		for sc.Scan() {
			var ev struct{ ID string }
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("%s: line is not JSON: %v", p, err)
			}
			if ev.ID == "" {
				var ce struct{ Data struct{ ID string } }
				_ = json.Unmarshal(sc.Bytes(), &ce)
				ev.ID = ce.Data.ID
			}
			ids[ev.ID]++
			raw = append(raw, append([]byte(nil), sc.Bytes()...))
		}
		f.Close()
	}
	return ids, files, raw
}

// Every event one line, files rotated by size and pruned, an event over
// 1 MiB written whole.
func TestRotationBySize(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit", "events.jsonl")
	e := exportertest.Start(t, exportertest.Options{MaxPayload: 4 << 20})
	big := strings.Repeat("z", 3<<19)
	ids := e.Fill(t, 3000, func(i int) events.Event {
		q := exportertest.Query(i)
		if i == 1500 {
			q.Query = "SELECT '" + big + "'"
		}
		return q
	})
	_, stop := e.Run(t, fmt.Sprintf(`name: files
type: file
settings:
  path: %s
  max_size: 200000
  linger: 20ms`, path))
	e.Settled(t, "files", 60*time.Second)
	stop()
	got, files, raw := lines(t, path)
	for _, id := range ids {
		if got[id] != 1 {
			t.Fatalf("event %s written %d times", id, got[id])
		}
	}
	if files < 5 {
		t.Fatalf("%d files: want rotation at 200000 bytes", files)
	}
	for _, p := range append(file.Rotated(path), path) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		// A file exceeds the limit only when one event alone is larger.
		if st.Size() > 200000 && st.Size() < 3<<19 {
			t.Fatalf("%s is %d bytes, over max_size", p, st.Size())
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	for _, r := range raw {
		if err := schemas.Validate(r); err != nil {
			t.Fatal(err)
		}
	}
}

// Age rotation, pruning to max_files, and appending after a restart.
func TestRotationByAgeAndPruning(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "e.jsonl")
	s, err := file.New(file.Config{Path: path, MaxAge: config.Duration(50 * time.Millisecond), MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := format.New("cloudevents", format.Options{})
	rec := func(i int) exporters.Record {
		q := exportertest.Query(i)
		if err := events.Stamp(q, "c"); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(q)
		env, err := format.Scan(b)
		if err != nil {
			t.Fatal(err)
		}
		d, err := f.Append(nil, &env, b)
		if err != nil {
			t.Fatal(err)
		}
		return exporters.Record{Envelope: env, Event: b, Data: d}
	}
	var ids []string
	for i := 0; i < 5; i++ {
		r := rec(i)
		ids = append(ids, r.ID)
		if err := s.Deliver(context.Background(), []exporters.Record{r}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(file.Rotated(path)); n != 2 {
		t.Fatalf("%d rotated files, want max_files 2", n)
	}
	// Reopened, the sink appends.
	s, err = file.New(file.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	r := rec(99)
	if err := s.Deliver(context.Background(), []exporters.Record{r}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	got, _, _ := lines(t, path)
	// The two oldest files were pruned: the last three events and the new
	// one remain.
	for _, id := range append(ids[2:], r.ID) {
		if got[id] != 1 {
			t.Fatalf("event %s: %d lines", id, got[id])
		}
	}
	if got[ids[0]] != 0 {
		t.Fatal("the oldest file was not pruned")
	}
}

// OCSF through the file sink: every line is a valid OCSF event of the
// class it claims, for every kind of event the exporters map.
func TestOCSFLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ocsf.jsonl")
	e := exportertest.Start(t, exportertest.Options{})
	ids := e.Fill(t, 200, func(i int) events.Event {
		switch i % 5 {
		case 1:
			return &events.SessionStart{Session: events.Session{SID: "s1"}, Database: events.Database{Service: "pg", Protocol: "postgres", URI: "10.0.0.1:5432", User: "app", Name: "db"},
				Status: events.Status{Success: i%2 == 0, Error: "denied by rule"}, ClientAddr: "192.0.2.7:51000", Rule: "access"}
		case 2:
			return &events.Result{Session: events.Session{SID: "s1", EI: 2}, Database: events.Database{Service: "pg", Protocol: "postgres", URI: "db.internal:5432"},
				Status: events.Status{Success: true}, CommandTag: "INSERT 0 1", Rows: 1, DurationNs: 2e6}
		case 3:
			ev := &events.UserLogin{Status: events.Status{Success: false, Error: "wrong user name or password"}, Method: "password", Reason: "wrong_password", SourceAddr: "198.51.100.4"}
			ev.User = "mallory"
			return ev
		case 4:
			return &events.SessionEnd{Session: events.Session{SID: "s1", EI: 9}, Database: events.Database{Service: "pg", URI: "10.0.0.1:5432"}, Reason: "client closed", DurationNs: 5e9}
		}
		return exportertest.Query(i)
	})
	_, stop := e.Run(t, fmt.Sprintf("name: ocsf\ntype: file\nformat: ocsf\nsettings:\n  path: %s\n  linger: 20ms", path))
	e.Settled(t, "ocsf", 30*time.Second)
	stop()
	_, _, raw := lines(t, path)
	if len(raw) != len(ids) {
		t.Fatalf("%d lines for %d events", len(raw), len(ids))
	}
	classes := map[float64]int{}
	for _, r := range raw {
		if err := ocsfcheck.Check(r); err != nil {
			t.Fatalf("%v\n%s", err, r)
		}
		var o struct {
			ClassUID float64 `json:"class_uid"`
		}
		_ = json.Unmarshal(r, &o)
		classes[o.ClassUID]++
	}
	for _, c := range []float64{6005, 3003, 3002} {
		if classes[c] == 0 {
			t.Fatalf("no event of class %v in %v", c, classes)
		}
	}
}

// Frames and single events stored side by side: every event is one line,
// written once, in stream order, as its stored bytes; each frame is
// acknowledged (the consumer settles) only once its events are written.
func TestFramesWrittenOnceInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "frames.jsonl")
	e := exportertest.Start(t, exportertest.Options{})
	ids := e.FillFrames(t, 3000, nil)
	var stored [][]byte
	e.EachEvent(t, func(_ uint64, ev []byte) { stored = append(stored, bytes.Clone(ev)) })
	if len(stored) != len(ids) {
		t.Fatalf("%d events stored, %d published", len(stored), len(ids))
	}
	_, stop := e.Run(t, fmt.Sprintf("name: frames\ntype: file\nsettings:\n  path: %s\n  batch_size: 50\n  linger: 20ms", path))
	e.Settled(t, "frames", 60*time.Second)
	stop()
	got, _, raw := lines(t, path)
	if len(raw) != len(ids) {
		t.Fatalf("%d lines for %d events", len(raw), len(ids))
	}
	for i, id := range ids {
		if got[id] != 1 {
			t.Fatalf("event %s written %d times", id, got[id])
		}
		if !bytes.Equal(raw[i], stored[i]) {
			t.Fatalf("line %d is not event %d as stored:\n%s\n%s", i, i, raw[i], stored[i])
		}
	}
}

func TestMain(m *testing.M) {
	exportertest.MaybeChild()
	os.Exit(m.Run())
}

// BenchmarkDrain drains TOLLGATE_BENCH_EVENTS events (100,000 by default)
// into a file, fsync'd after every batch, in a child process.
func BenchmarkDrain(b *testing.B) {
	n := exportertest.BenchEvents(100000)
	e := exportertest.Start(b, exportertest.Options{})
	e.Fill(b, n, nil)
	dir := b.TempDir()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("bench%d", i)
		took, rss := e.Drain(b, name, fmt.Sprintf("name: %s\ntype: file\nsettings:\n  path: %s", name, filepath.Join(dir, name+".jsonl")))
		exportertest.Report(b, n, took, rss)
	}
}
