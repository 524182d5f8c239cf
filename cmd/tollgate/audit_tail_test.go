package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// auditTailStore starts an embedded server on a fresh data dir (listening
// at listen, "-" for in-process only) with the streams, and returns the
// configuration, a connection of the agent and the server's stop.
func auditTailStore(t *testing.T, ctx context.Context, listen string) (*config.Config, jetstream.JetStream, func()) {
	t.Helper()
	cfg, err := startConfig("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.NATS.Embedded.Listen = listen
	o, err := natsserver.FromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsserver.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitJetStream(ctx); err != nil {
		t.Fatal(err)
	}
	bnc, err := srv.ConnectAs(natsserver.Broker)
	if err != nil {
		t.Fatal(err)
	}
	bjs, _ := jetstream.New(bnc)
	if err := events.EnsureStreams(ctx, bjs, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	anc, err := srv.ConnectAs(natsserver.Agent)
	if err != nil {
		t.Fatal(err)
	}
	ajs, _ := jetstream.New(anc)
	stop := func() {
		anc.Close()
		bnc.Close()
		srv.Shutdown()
	}
	return cfg, ajs, stop
}

// auditTailServer is auditTailStore with a publisher of queries from..to-1
// of session S1 followed by one login of user u<from>.
func auditTailServer(t *testing.T, ctx context.Context, listen string) (*config.Config, func(from, to int), func()) {
	t.Helper()
	cfg, ajs, stop := auditTailStore(t, ctx, listen)
	pub, err := events.NewPublisher(ajs, "ci")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int) {
		var batch []events.Event
		for i := from; i < to; i++ {
			q := &events.Query{Session: events.Session{SID: "S1", EI: uint64(i)}, Query: fmt.Sprintf("SELECT %d", i)}
			q.Envelope.User = "alice"
			batch = append(batch, q)
		}
		login := &events.UserLogin{Status: events.Status{Success: true}, Method: events.LoginPassword}
		login.User = fmt.Sprintf("u%d", from)
		batch = append(batch, login)
		if err := pub.PublishBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	return cfg, publish, stop
}

// tailLines is what a tail printed: the queries' statements and the
// logins' users, in order.
func tailLines(t *testing.T, out string) []string {
	t.Helper()
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var ev struct {
			Type, User string
			Query      string `json:"db_query"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if ev.Type == "user.login" {
			got = append(got, "login "+ev.User)
		} else {
			got = append(got, ev.Query)
		}
	}
	return got
}

// TestAuditTailWindows stores two batches of events a moment apart on a
// data dir, then reads them back through --since, --until, -n and --type.
func TestAuditTailWindows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, publish, stop := auditTailServer(t, ctx, natsserver.InProcessOnly)
	publish(0, 5)
	time.Sleep(100 * time.Millisecond)
	mid := time.Now()
	time.Sleep(100 * time.Millisecond)
	publish(5, 10)
	stop()

	tail := func(f auditTailFlags) ([]string, error) {
		var out bytes.Buffer
		if err := auditTail(ctx, cfg, f, &out); err != nil {
			return nil, err
		}
		return tailLines(t, out.String()), nil
	}
	check := func(f auditTailFlags, want ...string) {
		t.Helper()
		got, err := tail(f)
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("%+v:\n got %q\nwant %q", f, got, want)
		}
	}
	rfc := mid.UTC().Format(time.RFC3339Nano)
	check(auditTailFlags{since: rfc}, "SELECT 5", "SELECT 6", "SELECT 7", "SELECT 8", "SELECT 9", "login u5")
	check(auditTailFlags{until: rfc, typ: "user.login"}, "login u0")
	check(auditTailFlags{since: "1h", typ: "user.*"}, "login u0", "login u5")
	check(auditTailFlags{last: 3, typ: "db.session.*"}, "SELECT 7", "SELECT 8", "SELECT 9")
	check(auditTailFlags{last: 2, until: rfc}, "SELECT 4", "login u0")
	check(auditTailFlags{last: 50, typ: "db.session.query", session: "S1", since: rfc},
		"SELECT 5", "SELECT 6", "SELECT 7", "SELECT 8", "SELECT 9")
	check(auditTailFlags{since: "0s"})

	for _, c := range []struct {
		f    auditTailFlags
		want string
	}{
		{auditTailFlags{typ: "nonsense"}, "db.session.query"},
		{auditTailFlags{typ: "db.sesion.*"}, "user.login"},
		{auditTailFlags{since: "yesterday"}, "RFC 3339"},
		{auditTailFlags{until: "-5m"}, "duration ago"},
		{auditTailFlags{until: "1h", follow: true}, "--follow"},
		{auditTailFlags{since: "1h", until: "2h"}, "before --since"},
	} {
		if _, err := tail(c.f); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one with %q", c.f, err, c.want)
		}
	}
}

// TestAuditTailFollowLast prints the last events of the history, then the
// new ones, from a running server.
func TestAuditTailFollowLast(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, publish, stop := auditTailServer(t, ctx, freeAddr(t))
	defer stop()
	publish(0, 5)

	var out lockedBuffer
	tctx, tcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- auditTail(tctx, cfg, auditTailFlags{follow: true, last: 2, typ: "db.session.query"}, &out)
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
	waitLines("SELECT 3", "SELECT 4")
	publish(5, 7)
	waitLines("SELECT 3", "SELECT 4", "SELECT 5", "SELECT 6")
	tcancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
