package natsserver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// authServer starts a server with every part's identity and TLS on a
// loopback listener, and the streams made by the broker.
func authServer(t *testing.T) (*Server, *Credentials) {
	t.Helper()
	dir := t.TempDir()
	creds, err := LoadOrCreateCredentials(filepath.Join(dir, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := ServerTLS(creds.Dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Options{StoreDir: filepath.Join(dir, "js"), Listen: "127.0.0.1:0", Auth: creds, TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc, err := s.ConnectAs(Broker)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if err := events.EnsureStreams(ctxT(t, 10*time.Second), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return s, creds
}

// dial connects over TCP and TLS as part p, recording the server's
// asynchronous errors (permission violations).
func dial(t *testing.T, s *Server, creds *Credentials, p Part) (*nats.Conn, jetstream.JetStream, chan error) {
	t.Helper()
	errs := make(chan error, 16)
	opts, err := creds.Options(p)
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, nats.RootCAs(filepath.Join(creds.Dir, TLSCertFile)), nats.Timeout(2*time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", p, err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	return nc, js, errs
}

// refused asserts that a JetStream request or publish failed, and that the
// server named a permissions violation.
func refused(t *testing.T, what string, err error, errs chan error) {
	t.Helper()
	if err == nil && !strings.Contains(what, "subscribe") {
		t.Fatalf("%s: allowed", what)
	}
	select {
	case e := <-errs:
		if !errors.Is(e, nats.ErrPermissionViolation) && !strings.Contains(e.Error(), "Permissions Violation") {
			t.Fatalf("%s: failed with %v, server said %v (want a permissions violation)", what, err, e)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("%s: failed with %v but the server reported no permissions violation", what, err)
	}
}

func TestAnonymousConnectionRefused(t *testing.T) {
	s, creds := authServer(t)
	_, err := nats.Connect(s.ClientURL(), nats.RootCAs(filepath.Join(creds.Dir, TLSCertFile)), nats.Timeout(2*time.Second))
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("anonymous connection: %v, want an authorization violation", err)
	}
	// Plaintext is refused too: the listener requires TLS.
	_, err = nats.Connect(strings.Replace(s.ClientURL(), "tls://", "nats://", 1), nats.Timeout(2*time.Second))
	if err == nil {
		t.Fatal("plaintext connection accepted")
	}
}

func TestCredentialsFilesArePrivate(t *testing.T) {
	_, creds := authServer(t)
	for _, p := range Parts {
		fi, err := os.Stat(creds.SeedFile(p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", creds.SeedFile(p), fi.Mode().Perm())
		}
	}
	// Loading again keeps the same identities.
	again, err := LoadOrCreateCredentials(creds.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Parts {
		if again.PublicKey(p) != creds.PublicKey(p) {
			t.Errorf("%s: identity changed on reload", p)
		}
	}
}

func TestPartsDoOnlyTheirOwnJob(t *testing.T) {
	s, creds := authServer(t)
	ctx := func() context.Context { return ctxT(t, time.Second) }

	t.Run("agent publishes audit", func(t *testing.T) {
		_, js, _ := dial(t, s, creds, Agent)
		if _, err := js.Publish(ctx(), "audit.c.s1.db.session.query", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("agent cannot append STATE", func(t *testing.T) {
		_, js, errs := dial(t, s, creds, Agent)
		_, err := js.Publish(ctx(), "state.user.mallory", []byte(`{"type":"user.create"}`))
		refused(t, "agent publish state.>", err, errs)
	})
	t.Run("agent cannot read the credentials bucket", func(t *testing.T) {
		_, js, errs := dial(t, s, creds, Agent)
		_, err := js.KeyValue(ctx(), "CREDENTIALS")
		refused(t, "agent bind KV_CREDENTIALS", err, errs)
	})
	t.Run("proxy keeps PRESENCE and records its refusals, nothing else", func(t *testing.T) {
		_, bjs, _ := dial(t, s, creds, Broker)
		// The bucket presence.Ensure makes.
		if _, err := bjs.CreateOrUpdateKeyValue(ctx(), jetstream.KeyValueConfig{Bucket: "PRESENCE"}); err != nil {
			t.Fatal(err)
		}
		_, js, errs := dial(t, s, creds, Proxy)
		kv, err := js.KeyValue(ctx(), "PRESENCE")
		if err != nil {
			t.Fatalf("proxy binds PRESENCE: %v", err)
		}
		if _, err := kv.Put(ctx(), "proxy.p1", []byte(`{"id":"p1"}`)); err != nil {
			t.Fatalf("proxy writes PRESENCE: %v", err)
		}
		if err := kv.Delete(ctx(), "proxy.p1"); err != nil {
			t.Fatalf("proxy deletes its lease: %v", err)
		}
		if _, err := js.Publish(ctx(), "audit.c.frame.proxy-1", []byte(`{}`)); err != nil {
			t.Fatalf("proxy records its refusals: %v", err)
		}
		_, err = js.Publish(ctx(), "state.user.mallory", []byte(`{"type":"user.create"}`))
		refused(t, "proxy publish state.>", err, errs)
		_, js, errs = dial(t, s, creds, Proxy)
		_, err = js.KeyValue(ctx(), "CREDENTIALS")
		refused(t, "proxy bind KV_CREDENTIALS", err, errs)
		_, js, errs = dial(t, s, creds, Proxy)
		_, err = js.OrderedConsumer(ctx(), "STATE", jetstream.OrderedConsumerConfig{})
		refused(t, "proxy reads STATE", err, errs)
	})
	t.Run("exporter cannot publish audit events", func(t *testing.T) {
		_, js, errs := dial(t, s, creds, Exporter)
		_, err := js.Publish(ctx(), "audit.c.s1.db.session.query", []byte(`{"db_query":"DROP TABLE t"}`))
		refused(t, "exporter publish audit", err, errs)
	})
	t.Run("auditor cannot subscribe to live audit", func(t *testing.T) {
		nc, _, errs := dial(t, s, creds, Auditor)
		if _, err := nc.SubscribeSync("audit.>"); err != nil {
			t.Fatal(err)
		}
		// A subscription is refused asynchronously: the server reports it.
		refused(t, "auditor subscribe audit.>", nc.Flush(), errs)
	})
	t.Run("only the broker writes the sessions index", func(t *testing.T) {
		_, bjs, _ := dial(t, s, creds, Broker)
		// The bucket sessions.StartIndex makes (sessions.IndexBucket).
		kv, err := bjs.CreateOrUpdateKeyValue(ctx(), jetstream.KeyValueConfig{Bucket: "SESSIONS"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx(), "s.S1", []byte(`{"sid":"S1"}`)); err != nil {
			t.Fatal(err)
		}
		_, ajs, _ := dial(t, s, creds, Auditor)
		akv, err := ajs.KeyValue(ctx(), "SESSIONS")
		if err != nil {
			t.Fatalf("auditor binds the sessions index: %v", err)
		}
		if e, err := akv.Get(ctx(), "s.S1"); err != nil || string(e.Value()) != `{"sid":"S1"}` {
			t.Fatalf("auditor reads the sessions index: %v", err)
		}
		w, err := akv.Watch(ctx(), "s.>")
		if err != nil {
			t.Fatalf("auditor lists the sessions index: %v", err)
		}
		if e := <-w.Updates(); e == nil || e.Key() != "s.S1" {
			t.Fatalf("auditor lists the sessions index: %v", e)
		}
		_ = w.Stop()
		for _, p := range []Part{Agent, Exporter, Auditor} {
			_, js, errs := dial(t, s, creds, p)
			_, err := js.Publish(ctx(), "$KV.SESSIONS.s.S1", []byte(`{"sid":"S1","statements":0}`))
			refused(t, string(p)+" writes the sessions index", err, errs)
		}
		for _, p := range []Part{Agent, Exporter} {
			_, js, errs := dial(t, s, creds, p)
			_, err := js.KeyValue(ctx(), "SESSIONS")
			refused(t, string(p)+" binds the sessions index", err, errs)
		}
		if e, err := kv.Get(ctx(), "s.S1"); err != nil || e.Revision() != 1 {
			t.Fatalf("the entry changed: %v", err)
		}
	})
	for _, p := range []Part{Agent, Exporter, Auditor, Proxy} {
		for _, op := range []string{"UPDATE", "DELETE", "PURGE"} {
			t.Run(string(p)+" cannot "+strings.ToLower(op)+" AUDIT", func(t *testing.T) {
				nc, _, errs := dial(t, s, creds, p)
				_, err := nc.Request("$JS.API.STREAM."+op+".AUDIT", []byte(`{"name":"AUDIT","storage":"memory","max_msgs":1}`), 500*time.Millisecond)
				refused(t, string(p)+" stream "+op, err, errs)
			})
		}
	}
	t.Run("broker cannot delete or purge AUDIT or STATE", func(t *testing.T) {
		nc, js, errs := dial(t, s, creds, Broker)
		for _, subj := range []string{"$JS.API.STREAM.DELETE.AUDIT", "$JS.API.STREAM.PURGE.AUDIT", "$JS.API.STREAM.MSG.DELETE.AUDIT",
			"$JS.API.STREAM.DELETE.STATE", "$JS.API.STREAM.PURGE.STATE", "$JS.API.STREAM.MSG.DELETE.STATE"} {
			_, err := nc.Request(subj, []byte(`{"seq":1}`), 500*time.Millisecond)
			refused(t, "broker "+subj, err, errs)
		}
		if _, err := js.Stream(ctx(), "AUDIT"); err != nil {
			t.Fatalf("AUDIT gone: %v", err)
		}
	})
}

// The block printed for an external cluster is what nats-server reads, and
// gives each part the same permissions as the embedded server.
func TestServerConfigIsReadByNATSServer(t *testing.T) {
	creds, err := LoadOrCreateCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(conf, []byte("port: -1\n"+creds.ServerConfig()), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server cannot read the block: %v", err)
	}
	if len(o.Nkeys) != len(Parts) {
		t.Fatalf("%d nkey users, want %d", len(o.Nkeys), len(Parts))
	}
	for _, u := range o.Nkeys {
		var part Part
		for _, p := range Parts {
			if creds.PublicKey(p) == u.Nkey {
				part = p
			}
		}
		want := Permissions(part)
		if part == "" || !slices.Equal(u.Permissions.Publish.Allow, want.Publish.Allow) || !slices.Equal(u.Permissions.Publish.Deny, want.Publish.Deny) ||
			!slices.Equal(u.Permissions.Subscribe.Allow, want.Subscribe.Allow) {
			t.Fatalf("user %s (%s): permissions %+v, want %+v", u.Nkey, part, u.Permissions, want)
		}
	}
}

// A loopback cluster runs with the same identities: the broker makes R3
// streams on one node, the agent publishes on another, an anonymous
// client is refused by every node.
func TestClusterWithIdentities(t *testing.T) {
	dir := t.TempDir()
	creds, err := LoadOrCreateCredentials(filepath.Join(dir, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := StartCluster(ctxT(t, 60*time.Second), dir, 3, Options{Auth: creds})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		t.Cleanup(n.Shutdown)
	}
	bnc, err := nodes[0].ConnectAs(Broker)
	if err != nil {
		t.Fatal(err)
	}
	bjs, _ := jetstream.New(bnc)
	if err := events.EnsureStreams(ctxT(t, 30*time.Second), bjs, events.StreamOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	anc, err := nodes[1].ConnectAs(Agent)
	if err != nil {
		t.Fatal(err)
	}
	ajs, _ := jetstream.New(anc)
	if _, err := ajs.Publish(ctxT(t, 5*time.Second), "audit.c.s1.db.session.query", []byte(`{}`)); err != nil {
		t.Fatalf("agent publish on another node: %v", err)
	}
	for _, n := range nodes {
		if nc, err := nats.Connect(n.ClientURL(), nats.Timeout(2*time.Second)); err == nil {
			nc.Close()
			t.Fatalf("node %s accepted an anonymous connection", n.Name())
		}
	}
}
