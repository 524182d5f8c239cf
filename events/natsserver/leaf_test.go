package natsserver_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// startHub runs a JetStream server in domain "hub" with a leaf node
// listener, as a hub cluster's node would be configured.
func startHub(t *testing.T) (*server.Server, string) {
	t.Helper()
	o := &server.Options{
		ServerName: "hub", Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: filepath.Join(t.TempDir(), "hub"), JetStreamDomain: config.DefaultHubDomain,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	leafPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	o.LeafNode.Host, o.LeafNode.Port = "127.0.0.1", leafPort
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("hub not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s, fmt.Sprintf("nats-leaf://127.0.0.1:%d", leafPort)
}

func TestLeafAuditIsSourcedByTheHubOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hub, leafURL := startHub(t)
	hnc, err := nats.Connect(hub.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer hnc.Close()
	hjs, _ := jetstream.New(hnc)
	if err := events.EnsureStreams(ctx, hjs, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}

	cfg, err := config.Parse([]byte("nats:\n  leaf:\n    hub_urls: [" + strings.TrimPrefix(leafURL, "nats-leaf://") + "]\n    domain: site-a\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	o, err := natsserver.FromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	o.StoreDir = filepath.Join(cfg.DataDir, "leaf")
	o.Listen = natsserver.InProcessOnly
	leaf, err := natsserver.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	defer leaf.Shutdown()
	lnc, err := leaf.ConnectAs(natsserver.Broker)
	if err != nil {
		t.Fatal(err)
	}
	ljs, _ := jetstream.New(lnc)
	if err := events.EnsureStreams(ctx, ljs, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	// The hub's API through the link, as the leaf role reaches it.
	viaLeaf, err := jetstream.NewWithDomain(lnc, config.DefaultHubDomain)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		changed, err := events.EnsureLeafSourced(ctx, viaLeaf, "site-a")
		if err == nil {
			if !changed {
				t.Fatal("first EnsureLeafSourced reported no change")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hub never reachable through the leaf: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if changed, err := events.EnsureLeafSourced(ctx, viaLeaf, "site-a"); err != nil || changed {
		t.Fatalf("second EnsureLeafSourced: changed %v, err %v; want no change", changed, err)
	}
	// A process of the hub ensuring its streams again keeps the source.
	if err := events.EnsureStreams(ctx, hjs, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	st, _ := hjs.Stream(ctx, events.AuditStream)
	if n := len(st.CachedInfo().Config.Sources); n != 1 {
		t.Fatalf("hub AUDIT has %d sources after EnsureStreams, want 1", n)
	}

	pub, err := events.NewPublisher(ljs, "leafy")
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		if err := pub.Publish(ctx, &events.Query{Session: events.Session{SID: "s1", EI: uint64(i)}, Query: fmt.Sprintf("SELECT %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Stored at the leaf at once; at the hub through the source, each once
	// (the link denies audit.> so nothing arrives twice by direct interest).
	li, _ := ljs.Stream(ctx, events.AuditStream)
	if info, _ := li.Info(ctx); info.State.Msgs != n {
		t.Fatalf("leaf AUDIT holds %d events, want %d", info.State.Msgs, n)
	}
	for {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == n {
			break
		}
		if info.State.Msgs > n {
			t.Fatalf("hub AUDIT holds %d events, more than the %d published", info.State.Msgs, n)
		}
		if ctx.Err() != nil {
			t.Fatalf("hub AUDIT holds %d of %d events", info.State.Msgs, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if info, _ := st.Info(ctx); info.State.Msgs != n {
		t.Fatalf("hub AUDIT grew to %d events, want %d", info.State.Msgs, n)
	}
}

func TestLeafConfigErrors(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"nats:\n  leaf:\n    domain: a\n", "nats.leaf.hub_urls: required"},
		{"nats:\n  leaf:\n    hub_urls: [h:1]\n", "nats.leaf.domain"},
		{"nats:\n  leaf:\n    hub_urls: [h:1]\n    domain: hub\n", "is the hub's domain too"},
		{"nats:\n  urls: [nats://h:1]\n  leaf:\n    hub_urls: [h:1]\n    domain: a\n", "cannot go with nats.urls"},
		{"nats:\n  leaf:\n    hub_urls: [h:1]\n    domain: a.b\n", "nats.leaf.domain"},
	} {
		_, err := config.Parse([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.yaml, err, c.want)
		}
	}
	if _, err := natsserver.Start(natsserver.Options{StoreDir: t.TempDir(), Leaf: &natsserver.Leaf{HubURLs: []string{"nohost"}, Domain: "x"}}); err == nil || !strings.Contains(err.Error(), "hub URL") {
		t.Errorf("bad hub URL: %v", err)
	}
}
