package presence_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/test/harness"
)

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	began := time.Now()
	for !ok() {
		if time.Since(began) > limit {
			t.Fatalf("waited %s for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(began)
}

// Routes appear and go at once when a proxy says so, a proxy that stops
// renewing (died) is taken as gone when its lease runs out, and a proxy
// stopped cleanly withdraws everything at once.
func TestLeases(t *testing.T) {
	ns := harness.NATS(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := presence.Ensure(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := presence.Ensure(ctx, js, 1); err != nil {
		t.Fatalf("a second Ensure: %v", err)
	}
	v, err := presence.Watch(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if v.Online("pg.1") || len(v.Proxies()) != 0 {
		t.Fatal("an empty bucket shows presence")
	}

	// A proxy that runs: its record and a route, removed when the tunnel
	// closes.
	rctx, stop := context.WithCancel(ctx)
	a := presence.NewAnnouncer(kv, "proxy-a", "127.0.0.1:3080", 3*time.Second, nil)
	done := make(chan struct{})
	go func() { a.Run(rctx); close(done) }()
	a.Add(ctx, "pg.1", "host/1")
	waitFor(t, 5*time.Second, "the route", func() bool { return v.Online("pg.1") && len(v.Proxies()) == 1 })
	r := v.Routes("pg.1")[0]
	if r.HostID != "host/1" || r.Proxy != "proxy-a" || r.ProxyAddr != "127.0.0.1:3080" {
		t.Fatalf("route %+v", r)
	}
	if got := v.ProxyIDs("pg.1"); len(got) != 1 || got[0] != "proxy-a" {
		t.Fatalf("proxies of pg.1: %v", got)
	}
	if v.Online("pg") {
		t.Fatal("pg is online through the route of pg.1")
	}
	if tun := v.Tunnels("proxy-a"); len(tun) != 1 || tun[0].Database != "pg.1" || tun[0].HostID != "host/1" {
		t.Fatalf("tunnels of proxy-a: %+v", tun)
	}
	if tun := v.Tunnels("proxy-b"); len(tun) != 0 {
		t.Fatalf("tunnels of a proxy that holds none: %+v", tun)
	}
	if p := v.Proxies()[0]; p.Renewed.IsZero() || p.Expires.Sub(p.Renewed) != 3*time.Second {
		t.Fatalf("proxy record renewed %s, expires %s: want the lease between them", p.Renewed, p.Expires)
	}
	// Renewed past its first lease.
	time.Sleep(4 * time.Second)
	if !v.Online("pg.1") {
		t.Fatal("a renewed route lapsed")
	}
	a.Remove(ctx, "pg.1", "host/1")
	waitFor(t, 2*time.Second, "the route removed", func() bool { return !v.Online("pg.1") })

	// A proxy that died: its route is written once and never renewed.
	dead := presence.NewAnnouncer(kv, "proxy-b", "127.0.0.1:3081", time.Second, nil)
	dead.Add(ctx, "pg2", "host-2")
	waitFor(t, 2*time.Second, "the dead proxy's route", func() bool { return v.Online("pg2") })
	lapsed := waitFor(t, 3*time.Second, "the dead proxy's route to lapse", func() bool { return !v.Online("pg2") })
	t.Logf("a route of a proxy that stopped renewing lapsed %s after it was seen", lapsed)
	if lapsed < 500*time.Millisecond {
		t.Fatalf("the route lapsed after %s, before its lease of 1s", lapsed)
	}

	// A clean stop withdraws the proxy and its routes.
	a.Add(ctx, "pg3", "host-3")
	waitFor(t, 2*time.Second, "pg3", func() bool { return v.Online("pg3") })
	stop()
	<-done
	waitFor(t, 2*time.Second, "the proxy withdrawn", func() bool { return !v.Online("pg3") && len(v.Proxies()) == 0 })
	a.Add(ctx, "pg4", "host-4")
	time.Sleep(100 * time.Millisecond)
	if v.Online("pg4") {
		t.Fatal("a stopped announcer still adds routes")
	}
}
