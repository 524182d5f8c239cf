package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// tailEvent encodes a query of session sid (statement q), or with sid
// empty a login of user q, as the publisher stores it.
func tailEvent(t *testing.T, sid, q string) []byte {
	t.Helper()
	var ev events.Event
	if sid == "" {
		login := &events.UserLogin{Status: events.Status{Success: true}, Method: events.LoginPassword}
		login.User = q
		ev = login
	} else {
		ev = &events.Query{Session: events.Session{SID: sid}, Query: q}
	}
	if err := events.Stamp(ev, "ci"); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hostSigner signs as a host does: a key and its certificate from the
// host CA of a fresh data dir.
func hostSigner(t *testing.T) *events.Signer {
	t.Helper()
	cas, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, _, err := cas.IssueHost(key.Public(), "h1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := events.NewSigner(key, cert)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tailStore publishes frames and single events into AUDIT as writers do.
type tailStore struct {
	t    *testing.T
	ctx  context.Context
	js   jetstream.JetStream
	fseq uint64
	prev string
	// signer, when set, signs the frames.
	signer *events.Signer
}

// frame stores one frame of run r1 holding evs.
func (s *tailStore) frame(evs ...[]byte) {
	s.t.Helper()
	if s.prev == "" {
		s.prev = events.FrameGenesis("r1")
	}
	h := events.FrameHeader{ID: events.NewID(), Src: "h1", Run: "r1", FSeq: s.fseq, Prev: s.prev}
	data, hash, err := events.EncodeFrame(nil, h, evs, s.signer)
	if err != nil {
		s.t.Fatal(err)
	}
	s.fseq, s.prev = s.fseq+1, hash
	m := &nats.Msg{Subject: "audit.ci." + events.FrameSubject + ".h1", Data: data, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, h.ID)
	if _, err := s.js.PublishMsg(s.ctx, m); err != nil {
		s.t.Fatal(err)
	}
}

// single stores one event on its own, as before frames.
func (s *tailStore) single(sid string, ev []byte) {
	s.t.Helper()
	var h struct{ ID, Type string }
	if err := json.Unmarshal(ev, &h); err != nil {
		s.t.Fatal(err)
	}
	if sid == "" {
		sid = events.NoSession
	}
	m := &nats.Msg{Subject: "audit.ci." + sid + "." + h.Type, Data: ev, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, h.ID)
	if _, err := s.js.PublishMsg(s.ctx, m); err != nil {
		s.t.Fatal(err)
	}
}

// TestAuditTailFrames reads a stream of frames holding several sessions
// mixed with single events: the filters, -n and the time window count
// events, whatever message holds them.
func TestAuditTailFrames(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, js, stop := auditTailStore(t, ctx, natsserver.InProcessOnly)
	s := &tailStore{t: t, ctx: ctx, js: js}
	ev := func(sid, q string) []byte { return tailEvent(t, sid, q) }

	// S3's one event, then enough messages after it that -n 1 has to walk
	// back over several chunks to find it.
	s.single("S3", ev("S3", "C1"))
	for range 40 {
		s.single("S4", ev("S4", "D"))
	}
	s.frame(ev("S1", "A1"), ev("S2", "B1"), ev("", "ua"), ev("S1", "A2"))
	s.single("S2", ev("S2", "B2"))
	time.Sleep(100 * time.Millisecond)
	mid := time.Now()
	time.Sleep(100 * time.Millisecond)
	// A signed frame: its trailer is no event.
	s.signer = hostSigner(t)
	s.frame(ev("S1", "A3"), ev("S2", "B3"), ev("S1", "A4"), ev("S1", "A5"), ev("S1", "A6"))
	s.single("", ev("", "ub"))
	stop()

	check := func(f auditTailFlags, want ...string) {
		t.Helper()
		var out bytes.Buffer
		if err := auditTail(ctx, cfg, f, &out); err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		got := tailLines(t, out.String())
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("%+v:\n got %q\nwant %q", f, got, want)
		}
	}
	rfc := mid.UTC().Format(time.RFC3339Nano)
	check(auditTailFlags{since: rfc}, "A3", "B3", "A4", "A5", "A6", "login ub")
	check(auditTailFlags{since: "1h", typ: "db.session.query", session: "S2"}, "B1", "B2", "B3")
	check(auditTailFlags{typ: "user.*"}, "login ua", "login ub")
	check(auditTailFlags{session: events.NoSession}, "login ua", "login ub")
	check(auditTailFlags{session: "S1", until: rfc}, "A1", "A2")
	// -n counts events: the last three are in two messages, the last
	// three of S1 in one frame, the last five of S1 in two frames with a
	// single event between them.
	check(auditTailFlags{last: 3}, "A5", "A6", "login ub")
	check(auditTailFlags{last: 3, session: "S1"}, "A4", "A5", "A6")
	check(auditTailFlags{last: 5, session: "S1"}, "A2", "A3", "A4", "A5", "A6")
	check(auditTailFlags{last: 2, until: rfc}, "A2", "B2")
	check(auditTailFlags{last: 2, until: rfc, session: "S2"}, "B1", "B2")
	check(auditTailFlags{last: 10, since: rfc, session: "S2"}, "B3")
	check(auditTailFlags{last: 1, session: "S3"}, "C1")
	check(auditTailFlags{last: 100, session: "S3", until: rfc}, "C1")
	check(auditTailFlags{last: 5, session: "S9"})

	// Another format prints the same events, one per line.
	var out bytes.Buffer
	if err := auditTail(ctx, cfg, auditTailFlags{format: "cloudevents", session: "S1"}, &out); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 6 || !strings.Contains(out.String(), `"specversion"`) {
		t.Fatalf("cloudevents of S1: %d lines\n%s", n, out.String())
	}
}

// TestAuditTailFollowFrames follows from the last events of a history of
// frames, then prints the events of the frames stored after.
func TestAuditTailFollowFrames(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, js, stop := auditTailStore(t, ctx, freeAddr(t))
	defer stop()
	s := &tailStore{t: t, ctx: ctx, js: js}
	ev := func(sid, q string) []byte { return tailEvent(t, sid, q) }
	s.frame(ev("S1", "A1"), ev("S2", "B1"), ev("S1", "A2"), ev("S1", "A3"))

	var out lockedBuffer
	tctx, tcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- auditTail(tctx, cfg, auditTailFlags{follow: true, last: 2, session: "S1"}, &out)
	}()
	waitLines := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := tailLines(t, out.String())
			if strings.Join(got, "|") == strings.Join(want, "|") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("got %q, want %q", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLines("A2", "A3")
	s.frame(ev("S2", "B2"), ev("S1", "A4"))
	s.single("S1", ev("S1", "A5"))
	waitLines("A2", "A3", "A4", "A5")
	tcancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
