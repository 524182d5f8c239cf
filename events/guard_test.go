package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestCheckAudit(t *testing.T) {
	day := StreamOptions{AuditMaxAge: 24 * time.Hour, AuditMaxBytes: 1 << 30}
	cases := []struct {
		name   string
		want   StreamOptions
		change func(*jetstream.StreamConfig)
		fault  string // "" for sound
	}{
		{"as made", StreamOptions{}, func(*jetstream.StreamConfig) {}, ""},
		{"as made with limits", day, func(*jetstream.StreamConfig) {}, ""},
		{"looser limits", day, func(c *jetstream.StreamConfig) {
			c.MaxAge, c.MaxBytes, c.Replicas = 48*time.Hour, -1, 3
		}, ""},
		{"memory", StreamOptions{}, func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage },
			"AUDIT was weakened: storage is memory, want file"},
		{"max msgs", StreamOptions{}, func(c *jetstream.StreamConfig) { c.MaxMsgs = 1 },
			"AUDIT was weakened: max_msgs is 1, want unlimited"},
		{"memory and one message", StreamOptions{}, func(c *jetstream.StreamConfig) {
			c.Storage, c.MaxMsgs = jetstream.MemoryStorage, 1
		}, "AUDIT was weakened: storage is memory, want file; max_msgs is 1, want unlimited"},
		{"shorter age", day, func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour },
			"AUDIT was weakened: max_age is 1h0m0s, want at least 24h0m0s"},
		{"age where unlimited", StreamOptions{}, func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour },
			"AUDIT was weakened: max_age is 1h0m0s, want unlimited"},
		{"fewer bytes", day, func(c *jetstream.StreamConfig) { c.MaxBytes = 1000 },
			"AUDIT was weakened: max_bytes is 1000 bytes, want at least 1073741824 bytes"},
		{"per subject", StreamOptions{}, func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 1 },
			"AUDIT was weakened: max_msgs_per_subject is 1, want unlimited"},
		{"deny flags", StreamOptions{}, func(c *jetstream.StreamConfig) {
			c.DenyDelete, c.DenyPurge, c.AllowRollup = false, false, true
		}, "AUDIT was weakened: deny_delete is off; deny_purge is off; allow_rollup is on"},
		{"subjects", StreamOptions{}, func(c *jetstream.StreamConfig) { c.Subjects = []string{"audit.c1.>"} },
			"AUDIT was weakened: subjects are [audit.c1.>], want [audit.>]"},
		{"retention", StreamOptions{}, func(c *jetstream.StreamConfig) { c.Retention = jetstream.InterestPolicy },
			"AUDIT was weakened: retention is interest, want limits"},
		{"discard", StreamOptions{}, func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardNew },
			"AUDIT was weakened: discard is new, want old"},
		{"replicas", StreamOptions{Replicas: 3}, func(c *jetstream.StreamConfig) { c.Replicas = 1 },
			"AUDIT was weakened: replicas is 1, want 3"},
		{"duplicates", StreamOptions{}, func(c *jetstream.StreamConfig) { c.Duplicates = time.Second },
			"AUDIT was weakened: duplicate_window is 1s, want at least 2m0s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := AuditStreamConfig(tc.want)
			tc.change(&cfg)
			err := CheckAudit(&jetstream.StreamInfo{Config: cfg}, tc.want)
			if tc.fault == "" {
				if err != nil {
					t.Fatalf("sound stream reported: %v", err)
				}
				return
			}
			var f *StreamFault
			if !errors.As(err, &f) || err.Error() != tc.fault {
				t.Fatalf("got %v\nwant %s", err, tc.fault)
			}
		})
	}
	err := CheckAudit(nil, StreamOptions{})
	if f, ok := err.(*StreamFault); !ok || !f.Missing || err.Error() != "AUDIT is missing" {
		t.Fatalf("missing stream: %v", err)
	}
}

// verdicts records what a guard notified, in order.
type verdicts struct {
	mu  sync.Mutex
	got []string
}

func (v *verdicts) notify(fault error) {
	s := "sound"
	if fault != nil {
		s = fault.Error()
	}
	v.mu.Lock()
	v.got = append(v.got, s)
	v.mu.Unlock()
}

func (v *verdicts) list() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.got...)
}

// waitUntil polls cond until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// The guard sees AUDIT reconfigured or made again behind its back within a
// second, from the advisories alone; a strict publisher hooked to it
// refuses with what changed, and publishes again once AUDIT is restored.
func TestGuardPublisherRefusesWhileWeakened(t *testing.T) {
	s := startStore(t, t.TempDir())
	p := newTestPublisher(t, s.js, WithAckTimeout(time.Second))
	var v verdicts
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// An hour between periodic checks: only the advisories can be quick.
	g, err := GuardPublisher(ctx, s.js, p, StreamOptions{}, WithGuardInterval(time.Hour), WithGuardNotify(v.notify))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	if g.Fault() != nil || p.StreamFault() != nil {
		t.Fatalf("sound AUDIT reported: %v / %v", g.Fault(), p.StreamFault())
	}
	ei := uint64(0)
	publish := func() error {
		ei++
		return p.Publish(context.Background(), queryEvent("sess1", ei))
	}
	if err := publish(); err != nil {
		t.Fatal(err)
	}

	st, err := s.js.Stream(ctx, AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	weak := cfg
	weak.MaxMsgs = 1
	if _, err := s.js.UpdateStream(ctx, weak); err != nil {
		t.Fatal(err)
	}
	const want = "audit store unavailable: AUDIT was weakened: max_msgs is 1, want unlimited"
	waitUntil(t, time.Second, "publisher suspended after max_msgs=1", func() bool { return p.StreamFault() != nil })
	err = publish()
	if !errors.Is(err, ErrAuditUnavailable) || err.Error() != want {
		t.Fatalf("publish on weakened AUDIT: %v\nwant %s", err, want)
	}
	var f *StreamFault
	if !errors.As(err, &f) || f.Defects[0] != "max_msgs is 1, want unlimited" {
		t.Fatalf("the refusal does not carry the fault: %#v", err)
	}
	if err := p.PublishBatch(context.Background(), []Event{queryEvent("sess1", 99)}); err == nil || err.Error() != want {
		t.Fatalf("batch on weakened AUDIT: %v", err)
	}

	if err := EnsureStreams(ctx, s.js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Second, "publisher resumed after EnsureStreams", func() bool { return p.StreamFault() == nil })
	if err := publish(); err != nil {
		t.Fatalf("publish after restore: %v", err)
	}

	// Deleted and made again in memory with one message.
	if err := s.js.DeleteStream(ctx, AuditStream); err != nil {
		t.Fatal(err)
	}
	mem := AuditStreamConfig(StreamOptions{})
	mem.Storage, mem.MaxMsgs, mem.DenyDelete, mem.DenyPurge = jetstream.MemoryStorage, 1, false, false
	if _, err := s.js.CreateStream(ctx, mem); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Second, "memory AUDIT seen", func() bool {
		err := p.StreamFault()
		return err != nil && strings.Contains(err.Error(), "storage is memory, want file")
	})
	err = publish()
	const wantMem = "audit store unavailable: AUDIT was weakened: storage is memory, want file; max_msgs is 1, want unlimited; deny_delete is off; deny_purge is off"
	if err == nil || err.Error() != wantMem {
		t.Fatalf("publish on memory AUDIT: %v\nwant %s", err, wantMem)
	}

	if err := s.js.DeleteStream(ctx, AuditStream); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStreams(ctx, s.js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Second, "publisher resumed after AUDIT made again", func() bool { return p.StreamFault() == nil })
	if err := publish(); err != nil {
		t.Fatalf("publish after AUDIT made again: %v", err)
	}

	waitUntil(t, time.Second, "last verdict sound", func() bool {
		got := v.list()
		return got[len(got)-1] == "sound"
	})
	got := v.list()
	wantSeq := []string{
		"AUDIT was weakened: max_msgs is 1, want unlimited", "sound",
		"AUDIT is missing",
	}
	if len(got) < 5 || fmt.Sprint(got[:3]) != fmt.Sprint(wantSeq) || got[len(got)-1] != "sound" ||
		!strings.Contains(strings.Join(got, "|"), "storage is memory") {
		t.Fatalf("verdicts %q", got)
	}
}

// Without advisories, the periodic check still finds a weakened AUDIT.
func TestGuardChecksPeriodically(t *testing.T) {
	s := startStore(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	var v verdicts
	g, err := StartGuard(ctx, s.js, StreamOptions{}, WithGuardInterval(20*time.Millisecond), WithGuardNotify(v.notify))
	if err != nil {
		t.Fatal(err)
	}
	g.unsubscribe()
	st, err := s.js.Stream(ctx, AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxAge = time.Hour
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Second, "max_age seen", func() bool { return g.Fault() != nil })
	if err := g.Fault().Error(); err != "AUDIT was weakened: max_age is 1h0m0s, want unlimited" {
		t.Fatalf("fault %q", err)
	}
	cancel()
	g.Stop()
	g.Stop()
	if got := v.list(); len(got) != 1 {
		t.Fatalf("verdicts %q", got)
	}
}

// The guard needs nothing but STREAM.INFO on AUDIT and its advisories.
func TestGuardWithLeastPermissions(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	err := os.WriteFile(conf, fmt.Appendf(nil, `
listen: "127.0.0.1:-1"
jetstream { store_dir: %q }
accounts {
  TG {
    jetstream: enabled
    users: [
      { user: admin, password: admin }
      { user: guard, password: guard, permissions: {
          publish: { allow: ["$JS.API.STREAM.INFO.AUDIT"] }
          subscribe: { allow: ["_INBOX.>", "$JS.EVENT.ADVISORY.STREAM.*.AUDIT"] }
      } }
    ]
  }
}
`, filepath.Join(dir, "store")), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	connect := func(user string) jetstream.JetStream {
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(user, user),
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	admin, guard := connect("admin"), connect("guard")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := EnsureStreams(ctx, admin, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	// A denied request gets no answer: it fails when its context ends.
	dctx, dcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err = EnsureStreams(dctx, guard, StreamOptions{})
	dcancel()
	if err == nil {
		t.Fatal("the guard's user could change streams; the test proves nothing")
	}
	g, err := StartGuard(ctx, guard, StreamOptions{}, WithGuardInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	st, err := admin.Stream(ctx, AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgs = 1
	if _, err := admin.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Second, "weakening seen by the least-privileged guard", func() bool { return g.Fault() != nil })
	if err := admin.DeleteStream(ctx, AuditStream); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Second, "deletion seen", func() bool {
		f := g.Fault()
		return f != nil && f.Error() == "AUDIT is missing"
	})
	if err := EnsureStreams(ctx, admin, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Second, "restore seen", func() bool { return g.Fault() == nil })
}

// A strict publisher refuses at once while suspended and publishes once
// resumed.
func TestPublisherStreamFaultStrict(t *testing.T) {
	s := startStore(t, t.TempDir())
	p := newTestPublisher(t, s.js)
	fault := &StreamFault{Stream: AuditStream, Defects: []string{"storage is memory, want file"}}
	p.SetStreamFault(fault)
	err := p.Publish(context.Background(), queryEvent("s", 0))
	if !errors.Is(err, ErrAuditUnavailable) || !errors.Is(err, fault) ||
		err.Error() != "audit store unavailable: AUDIT was weakened: storage is memory, want file" {
		t.Fatalf("suspended publish: %v", err)
	}
	if n := s.streamMsgs(t); n != 0 {
		t.Fatalf("suspended publisher stored %d events", n)
	}
	// The alert about the fault itself still goes through.
	if err := p.PublishAlert(context.Background(), NewStreamWeakened(fault)); err != nil {
		t.Fatalf("alert: %v", err)
	}
	p.SetStreamFault(nil)
	if err := p.Publish(context.Background(), queryEvent("s", 0)); err != nil {
		t.Fatalf("resumed publish: %v", err)
	}
	if n := len(s.storedEvents(t)); n != 2 {
		t.Fatalf("stream holds %d events, want the alert and one", n)
	}
}

// An async publisher holds accepted events while suspended and stores them
// all once resumed.
func TestPublisherStreamFaultAsyncHolds(t *testing.T) {
	s := startStore(t, t.TempDir())
	p := newTestPublisher(t, s.js, WithMode(ModeAsync), WithQueueSize(16))
	p.SetStreamFault(&StreamFault{Stream: AuditStream, Missing: true})
	var evs []*Query
	for i := range 10 {
		ev := queryEvent("s", uint64(i))
		evs = append(evs, ev)
		if err := p.Publish(context.Background(), ev); err != nil {
			t.Fatalf("async publish while suspended: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := p.Flush(ctx)
	cancel()
	if err == nil {
		t.Fatal("flush returned while events are held")
	}
	if n := s.streamMsgs(t); n != 0 {
		t.Fatalf("suspended async publisher stored %d events", n)
	}
	p.SetStreamFault(nil)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(s.storedEvents(t)); n != len(evs) {
		t.Fatalf("stored %d events after resume, want %d", n, len(evs))
	}
}

// The broker's alerts: a weakened AUDIT that still takes events gets the
// alert at once; a deleted one gets it once it is made again.
func TestStreamAlertsStoreTheFault(t *testing.T) {
	s := startStore(t, t.TempDir())
	p := newTestPublisher(t, s.js, WithAckTimeout(200*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The publisher is suspended by its own guard, as in `tollgate start`;
	// the alerts still go through.
	pg, err := GuardPublisher(ctx, s.js, p, StreamOptions{}, WithGuardInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Stop()
	g, err := StartGuard(ctx, s.js, StreamOptions{}, WithGuardInterval(time.Hour),
		WithGuardNotify(StreamAlerts(ctx, p, nil, "tollgate:broker")))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	subj := "audit.test.frame." + p.Source()
	// alert is the newest alert stored: each goes in a frame of its own.
	alert := func() *StreamWeakened {
		st, err := s.js.Stream(ctx, AuditStream)
		if err != nil {
			return nil
		}
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			return nil
		}
		f, err := DecodeFrame(m.Data)
		if err != nil || len(f.Events) != 1 {
			t.Fatalf("alert frame %q: %v", m.Data, err)
		}
		var ev StreamWeakened
		if err := json.Unmarshal(f.Events[0], &ev); err != nil {
			t.Fatal(err)
		}
		return &ev
	}

	st, err := s.js.Stream(ctx, AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgsPerSubject = 1
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 2*time.Second, "alert of max_msgs_per_subject stored", func() bool { return alert() != nil })
	ev := alert()
	if ev.Code != "TGST001W" || ev.User != "tollgate:broker" || ev.Stream != AuditStream || ev.Missing ||
		len(ev.Defects) != 1 || ev.Defects[0] != "max_msgs_per_subject is 1, want unlimited" ||
		ev.Fault != "AUDIT was weakened: max_msgs_per_subject is 1, want unlimited" {
		t.Fatalf("alert %+v", ev)
	}

	// Stored in a stream that keeps one message per subject, the alert is
	// stored again once AUDIT is sound.
	if err := EnsureStreams(ctx, s.js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "alert stored again once AUDIT is sound", func() bool {
		a := alert()
		return a != nil && a.StoredAgain
	})
	if again := alert(); again.ID == ev.ID || again.Fault != ev.Fault || !again.Time.Equal(ev.Time) {
		t.Fatalf("copy %+v of alert %+v", again, ev)
	}

	if err := s.js.DeleteStream(ctx, AuditStream); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Second, "deletion seen", func() bool {
		f := g.Fault()
		return f != nil && f.Error() == "AUDIT is missing"
	})
	if err := EnsureStreams(ctx, s.js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "alert of the deletion stored once AUDIT is back", func() bool {
		ev := alert()
		return ev != nil && ev.Missing && ev.Fault == "AUDIT is missing"
	})
	waitUntil(t, time.Second, "publisher resumed", func() bool { return p.StreamFault() == nil })
}
