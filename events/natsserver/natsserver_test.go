package natsserver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func publishN(t *testing.T, js jetstream.JetStream, sid string, from, to int) {
	t.Helper()
	p, err := events.NewPublisher(js, "test", events.WithAckTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	for i := from; i < to; i++ {
		ev := &events.Query{Session: events.Session{SID: sid, EI: uint64(i)}, Query: fmt.Sprintf("select %d", i)}
		if err := p.Publish(context.Background(), ev); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
}

func auditMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	s, err := js.Stream(ctx, events.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestSingleNodeKeepsDataAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	o := Options{StoreDir: filepath.Join(dir, "nats"), Listen: "127.0.0.1:0"}
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("client URL %q", s.ClientURL())
	}
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if err := events.EnsureStreams(ctxT(t, 10*time.Second), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, js, "s1", 0, 25)
	s.Shutdown()
	s.Shutdown() // twice is harmless
	if !nc.IsClosed() {
		t.Fatal("in-process connection still open after Shutdown")
	}

	// Over TCP this time, at the URL the restarted server reports.
	s2, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown()
	nc2, err := nats.Connect(s2.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	if n := auditMsgs(t, js2); n != 25 {
		t.Fatalf("after restart the AUDIT stream holds %d messages, want 25", n)
	}
	if err := events.EnsureStreams(ctxT(t, 10*time.Second), js2, events.StreamOptions{}); err != nil {
		t.Fatalf("EnsureStreams on existing streams: %v", err)
	}
	publishN(t, js2, "s1", 25, 30)
	if n := auditMsgs(t, js2); n != 30 {
		t.Fatalf("AUDIT stream holds %d messages, want 30", n)
	}
}

func TestInProcessOnly(t *testing.T) {
	s, err := Start(Options{StoreDir: t.TempDir(), Listen: InProcessOnly, MaxPayload: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if u := s.ClientURL(); u != "" {
		t.Fatalf("in-process server reports client URL %q", u)
	}
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	if nc.MaxPayload() != 64<<10 {
		t.Fatalf("max payload %d", nc.MaxPayload())
	}
	if err := s.WaitJetStream(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, "store dir is required"},
		{Options{StoreDir: "x", Listen: "localhost"}, `"localhost" is not host:port`},
		{Options{StoreDir: "x", Listen: "127.0.0.1:http"}, `port "http"`},
		{Options{StoreDir: "x", Cluster: &Cluster{Listen: "127.0.0.1:0"}}, "cluster: name is required"},
		{Options{StoreDir: "x", Cluster: &Cluster{Name: "c", Listen: "127.0.0.1:0", Routes: []string{"nats-route://nohost"}}}, "cluster route"},
		{Options{StoreDir: "x", MaxPayload: -1}, "max payload -1"},
	} {
		if _, err := Start(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: want error containing %q, got %v", tc.o, tc.want, err)
		}
	}
}

func TestUnusableStoreDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Start(Options{StoreDir: filepath.Join(file, "nats")})
	if err == nil || !strings.Contains(err.Error(), "not-a-dir") {
		t.Fatalf("want an error naming the store dir, got %v", err)
	}
}

func TestClusterR3SurvivesANode(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	nodes, err := StartCluster(ctx, t.TempDir(), 3, Options{Name: "tg"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, n := range nodes {
			n.Shutdown()
		}
	}()
	var urls []string
	for _, n := range nodes {
		if n.ClusterURL() == "" || n.ClientURL() == "" {
			t.Fatalf("node %s: cluster URL %q client URL %q", n.Name(), n.ClusterURL(), n.ClientURL())
		}
		urls = append(urls, n.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, events.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	info := st.CachedInfo()
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("AUDIT is not R3 on three nodes: %+v %+v", info.Config, info.Cluster)
	}
	publishN(t, js, "c1", 0, 50)

	// Stop the stream's leader: the two others elect a new one and go on.
	leader := info.Cluster.Leader
	var stopped *Server
	for i, n := range nodes {
		if n.Name() == leader {
			stopped = n
			nodes = append(nodes[:i], nodes[i+1:]...)
			break
		}
	}
	if stopped == nil {
		t.Fatalf("leader %q is none of the nodes", leader)
	}
	stopped.Shutdown()

	var lastErr error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := st.Info(actx)
		cancel()
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" && info.Cluster.Leader != leader {
			lastErr = nil
			break
		}
		lastErr = fmt.Errorf("info %v, err %v", info, err)
	}
	if lastErr != nil {
		t.Fatalf("no new leader after stopping %s: %v", leader, lastErr)
	}
	publishN(t, js, "c1", 50, 80)
	if n := auditMsgs(t, js); n != 80 {
		t.Fatalf("AUDIT holds %d messages after losing a node, want 80", n)
	}

	// The stopped node comes back with its store and catches up.
	back, err := Start(stopped.Options())
	if err != nil {
		t.Fatal(err)
	}
	nodes = append(nodes, back)
	if err := back.WaitJetStream(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestConnectExternal(t *testing.T) {
	dir := t.TempDir()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}

	start := func(o *server.Options) string {
		o.Host, o.Port, o.NoLog, o.NoSigs = "127.0.0.1", server.RANDOM_PORT, true, true
		srv, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatal("server not ready")
		}
		t.Cleanup(srv.Shutdown)
		return srv.ClientURL()
	}
	tokenURL := start(&server.Options{Authorization: "s3cret-token"})
	userURL := start(&server.Options{Username: "tg", Password: "pw-123"})
	nkeyURL := start(&server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})

	for _, tc := range []struct {
		name string
		cfg  config.NATS
		want string // empty: must connect
	}{
		{"token", config.NATS{URLs: []string{tokenURL}, Token: "s3cret-token"}, ""},
		{"wrong token", config.NATS{URLs: []string{tokenURL}, Token: "nope"}, "uthorization"},
		{"user", config.NATS{URLs: []string{userURL}, User: "tg", Password: "pw-123"}, ""},
		{"wrong password", config.NATS{URLs: []string{userURL}, User: "tg", Password: "pw-124"}, "uthorization"},
		{"nkey", config.NATS{URLs: []string{nkeyURL}, NKeySeedFile: seedFile}, ""},
		{"missing seed", config.NATS{URLs: []string{nkeyURL}, NKeySeedFile: filepath.Join(dir, "none.nk")}, "nkey_seed_file"},
		{"two methods", config.NATS{URLs: []string{tokenURL}, Token: "t", User: "u", Password: "p"}, "set one of"},
		{"half user", config.NATS{URLs: []string{userURL}, User: "tg"}, "go together"},
		{"half tls", config.NATS{URLs: []string{userURL}, TLS: config.TLS{CertFile: "c.pem"}}, "go together"},
		{"no urls", config.NATS{}, "nats.urls is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := Connect(tc.cfg, Auditor, nats.MaxReconnects(0))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
			for _, secret := range []string{"s3cret-token", "pw-124", "pw-123", string(seed)} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error shows a secret: %v", err)
				}
			}
		})
	}
}

func TestFromConfig(t *testing.T) {
	c := config.Default()
	c.DataDir = t.TempDir()
	c.NATS.Embedded.StoreDir = ""
	o, err := FromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if o.StoreDir != filepath.Join(c.DataDir, "nats") || o.Listen != c.NATS.Embedded.Listen || o.Name != DefaultName {
		t.Fatalf("%+v", o)
	}
	// Every part has its identity and the listener its certificate.
	if o.Auth == nil || o.TLS == nil || !o.Auth.Has(Agent) || o.Auth.Dir != filepath.Join(c.DataDir, "nats-auth") {
		t.Fatalf("auth %+v, tls %v", o.Auth, o.TLS != nil)
	}
}
