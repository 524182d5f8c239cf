package daemon_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/schemas"
)

// testBroker is a broker in-process: an embedded NATS server listening on
// a free loopback port, the streams, a strict publisher and the API on a
// free port.
type testBroker struct {
	*daemon.Broker
	cfg *config.Config
	srv *natsserver.Server
	js  jetstream.JetStream
	pub *events.Publisher
}

func startBroker(tb testing.TB, lo login.Options) *testBroker {
	tb.Helper()
	dir := tb.TempDir()
	// The embedded server as tollgate start runs it: every part with its
	// identity, TLS on the listener.
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
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		tb.Fatal(err)
	}
	pub, err := events.NewPublisher(js, config.DefaultCluster)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.NATS.Embedded.StoreDir = filepath.Join(dir, "nats")
	cfg.NATS.Embedded.Listen = srv.NATSServer().Addr().String()
	cfg.Proxy.Listen = ln.Addr().String()
	cfg.Proxy.PublicAddr = ln.Addr().String()
	b, err := daemon.Start(ctx, daemon.Options{Config: cfg, JS: js, Audit: pub, Listener: ln, Login: lo})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cancel()
		if err := b.Wait(); err != nil {
			tb.Errorf("broker: %v", err)
		}
		cctx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer c2()
		_ = pub.Close(cctx)
	})
	return &testBroker{Broker: b, cfg: cfg, srv: srv, js: js, pub: pub}
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func pubPEM(tb testing.TB, k crypto.Signer) string {
	tb.Helper()
	s, err := api.EncodePublicKey(k.Public())
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// client is an API client that trusts the broker's host CA and presents
// cert (nil: none).
func (b *testBroker) client(tb testing.TB, cert *tls.Certificate) *api.Client {
	tb.Helper()
	caCert, err := x509.ParseCertificate(b.HostCert.Certificate[1])
	if err != nil {
		tb.Fatal(err)
	}
	hostCA := x509.NewCertPool()
	hostCA.AddCert(caCert)
	c, err := api.NewClient(b.Addr, api.TLSConfig("127.0.0.1", hostCA, cert), "test")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// auditEvent is one stored AUDIT event, raw and decoded.
type auditEvent struct {
	raw []byte
	m   map[string]any
}

func (e auditEvent) str(k string) string { s, _ := e.m[k].(string); return s }

// audit reads every AUDIT event of type typ, validating each against its
// schema.
func (b *testBroker) audit(tb testing.TB, typ string) []auditEvent {
	tb.Helper()
	ctx := ctxT(tb)
	if err := b.pub.Flush(ctx); err != nil {
		tb.Fatal(err)
	}
	s, err := b.js.Stream(ctx, events.AuditStream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var out []auditEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			tb.Fatalf("AUDIT sequence %d: %v", seq, err)
		}
		f, err := events.DecodeFrame(m.Data)
		if err != nil {
			tb.Fatalf("AUDIT sequence %d: %v", seq, err)
		}
		for _, raw := range f.Events {
			var ev map[string]any
			if err := json.Unmarshal(raw, &ev); err != nil {
				tb.Fatal(err)
			}
			if ev["type"] != typ {
				continue
			}
			if err := schemas.Validate(raw); err != nil {
				tb.Errorf("event does not match its schema: %v\n%s", err, raw)
			}
			// Outside any session: a frame of its writer, or on its own
			// under the no-session token.
			want := "audit." + config.DefaultCluster + "._." + typ
			if f.Header != nil {
				want = "audit." + config.DefaultCluster + "." + events.FrameSubject + "." + f.Header.Src
			}
			if m.Subject != want {
				tb.Errorf("event stored under %s, want %s", m.Subject, want)
			}
			out = append(out, auditEvent{raw: raw, m: ev})
		}
	}
	return out
}

// lastAudit is the last event of typ, failing when there is none.
func (b *testBroker) lastAudit(tb testing.TB, typ string) auditEvent {
	tb.Helper()
	evs := b.audit(tb, typ)
	if len(evs) == 0 {
		tb.Fatalf("no %s event in AUDIT", typ)
	}
	return evs[len(evs)-1]
}
