package webui_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// world is a broker in-process as tollgate start runs it: an embedded
// NATS server with every part's identity, the streams, a strict
// publisher, and the API (with the web UI) on a free loopback port.
type world struct {
	*daemon.Broker
	js  jetstream.JetStream
	pub *events.Publisher
	srv *natsserver.Server
	// stop stops the broker (not NATS), as for a restart.
	stop func()
}

// startNATS starts the embedded server on a fresh data dir and returns
// the broker's JetStream with the streams made.
func startNATS(tb testing.TB) (string, *natsserver.Server, jetstream.JetStream) {
	tb.Helper()
	dir := tb.TempDir()
	ncfg := config.Default()
	ncfg.DataDir = dir
	ncfg.NATS.Embedded.StoreDir = filepath.Join(dir, "nats")
	ncfg.NATS.Embedded.Listen = "127.0.0.1:0"
	so, err := natsserver.FromConfig(ncfg)
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := natsserver.Start(so)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	nc, err := srv.ConnectAs(natsserver.Broker)
	if err != nil {
		tb.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	if err := events.EnsureStreams(ctxT(tb), js, events.StreamOptions{}); err != nil {
		tb.Fatal(err)
	}
	return dir, srv, js
}

func startWorld(tb testing.TB) *world { return startWorldAt(tb, "") }

// startWorldAt starts the world with the proxy's public address on host
// (and its listener's port): "localhost" for the pages that use security
// keys, which browsers do not offer to IP addresses.
func startWorldAt(tb testing.TB, host string) *world {
	tb.Helper()
	dir, srv, js := startNATS(tb)
	pub, err := events.NewPublisher(js, config.DefaultCluster)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cctx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer c2()
		_ = pub.Close(cctx)
	})
	b, stop := startBroker(tb, dir, host, srv, js, pub)
	return &world{Broker: b, js: js, pub: pub, srv: srv, stop: stop}
}

// startBroker runs a broker on the data dir dir and the NATS server srv
// until stop (or the test's end), its public address on host when host is
// not empty: a restart is a stop and another startBroker on the same dir;
// a second broker of the cluster is one on a data dir holding a copy of
// the first's CAs.
func startBroker(tb testing.TB, dir, host string, srv *natsserver.Server, js jetstream.JetStream, pub *events.Publisher) (*daemon.Broker, func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.NATS.Embedded.StoreDir = filepath.Join(dir, "nats")
	cfg.NATS.Embedded.Listen = srv.NATSServer().Addr().String()
	cfg.Proxy.Listen = ln.Addr().String()
	cfg.Proxy.PublicAddr = ln.Addr().String()
	if host != "" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		cfg.Proxy.PublicAddr = net.JoinHostPort(host, port)
	}
	b, err := daemon.Start(ctx, daemon.Options{Config: cfg, JS: js, Audit: pub, Listener: ln, Login: login.Options{}})
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	stop := sync.OnceFunc(func() {
		cancel()
		if err := b.Wait(); err != nil {
			tb.Errorf("broker: %v", err)
		}
	})
	tb.Cleanup(stop)
	return b, stop
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

var admin = state.Actor{User: "admin", Roles: []string{access.RoleEditor}}

// addUser creates a user as `tollgate users add` does and sets their
// password with the invite, as a first `tg login` does.
func (w *world) addUser(tb testing.TB, name, password string, roles ...string) {
	tb.Helper()
	res, err := w.Admin.As(admin, "").AddUser(ctxT(tb), api.AddUserRequest{Name: name, Roles: roles, DBUsers: []string{"*"}, DBNames: []string{"*"}})
	if err != nil {
		tb.Fatal(err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Login.Login(ctxT(tb), login.Request{User: name, Password: password, Invite: res.Invite, PublicKey: k.Public()}); err != nil {
		tb.Fatal(err)
	}
}
