// Package daemon puts the broker together: the state projection and its
// commands, the certificate authorities, authentication, the admin
// operations and the HTTPS API on the proxy address. Start is what
// `tollgate start` runs; Attach is what the admin commands use to work on
// the same data dir.
package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/admin"
	"github.com/tollgate-db/tollgate/broker/apiserver"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/locks"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/broker/requests"
	"github.com/tollgate-db/tollgate/broker/sso/oidcflow"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/broker/trail"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/sessions"
	"github.com/tollgate-db/tollgate/webui"
)

// Actor is who the broker itself is in the events it writes.
var Actor = state.Actor{User: "tollgate:broker"}

// Options configure Start.
type Options struct {
	Config *config.Config
	JS     jetstream.JetStream
	// Audit publishes to AUDIT; *events.Publisher in production.
	Audit login.Auditor
	Log   *slog.Logger
	Login login.Options
	// Listener, when set, is served instead of listening on
	// Config.Proxy.Listen.
	Listener net.Listener
	// GuardInterval is how often the AUDIT stream is checked besides its
	// advisories; zero means events.DefaultGuardInterval.
	GuardInterval time.Duration
}

// Broker is a running broker.
type Broker struct {
	Store *state.Store
	CAs   *ca.Authorities
	Login *login.Service
	Admin *admin.Service
	API   *apiserver.Server
	// Requests is the access-request workflow; it expires requests on
	// time while the broker runs.
	Requests *requests.Service
	// Guard watches the AUDIT stream; when it is missing or weakened the
	// broker logs it at error level and stores an audit.stream_weakened
	// event.
	Guard *events.Guard
	// Trail copies every STATE event into AUDIT, so admin actions are
	// audit events with their actor.
	Trail *trail.Trail
	// Addr is where the API listens; ProxyAddr is the public address
	// written into invites and identity files.
	Addr, ProxyAddr string
	// HostCert is the API's TLS certificate: leaf then host CA.
	HostCert tls.Certificate
	// ProxyNames answers, as tls.Config.GetCertificate, a ClientHello
	// for a proxy without the broker whose connections reach the broker
	// spliced (see proxyNames).
	ProxyNames func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Presence follows the PRESENCE bucket (PresenceKV): proxies and the
	// agent tunnels they hold.
	Presence   *presence.View
	PresenceKV jetstream.KeyValue

	unlock func()
	done   chan error
}

// Start opens the broker on the data dir and serves the API until ctx
// ends. The data dir is locked for the broker's lifetime, so admin
// commands know not to start a second NATS server on its store.
func Start(ctx context.Context, o Options) (_ *Broker, err error) {
	cfg := o.Config
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Login.Log == nil {
		o.Login.Log = o.Log
	}
	unlock, err := lockDataDir(ctx, cfg.DataDir, 30*time.Second)
	if err != nil {
		return nil, err
	}
	b := &Broker{unlock: unlock, done: make(chan error, 1)}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if b.CAs, err = ca.Open(cfg.DataDir); err != nil {
		return nil, err
	}
	// The broker signs the frames it stores (logins, alerts, the trail of
	// STATE) with a key of its own, certified by the host CA as the
	// agents' keys are, so `audit verify` trusts one CA for all of them.
	// In a process that also runs an agent, the agent's key takes over
	// the publisher when the agent starts.
	signer, err := b.CAs.FrameSigner("broker-" + cfg.ClusterName)
	if err != nil {
		return nil, fmt.Errorf("broker: signing key: %w", err)
	}
	if sp, ok := o.Audit.(interface{ SetSigner(*events.Signer) }); ok {
		sp.SetSigner(signer)
	}
	if b.Store, err = state.Open(ctx, o.JS, cfg.ClusterName); err != nil {
		return nil, err
	}
	if b.Trail, err = trail.Start(ctx, o.JS, trail.WithLogger(o.Log.With("component", "trail")), trail.WithSigner(signer)); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	want := events.StreamOptions{Replicas: cfg.NATS.Replicas, AuditMaxAge: cfg.NATS.AuditMaxAge.Std(), AuditMaxBytes: cfg.NATS.AuditMaxBytes}
	gopts := []events.GuardOption{
		events.WithGuardLogger(o.Log.With("component", "audit-guard")),
		events.WithGuardNotify(events.StreamAlerts(ctx, o.Audit, o.Log.With("component", "audit-guard"), Actor.User)),
	}
	if o.GuardInterval > 0 {
		gopts = append(gopts, events.WithGuardInterval(o.GuardInterval))
	}
	if b.Guard, err = events.StartGuard(ctx, o.JS, want, gopts...); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	// Agents and clients read the CA certificates from STATE.
	for _, t := range ca.Types {
		pem, err := b.CAs.CertPEM(t)
		if err != nil {
			return nil, err
		}
		if _, err := b.Store.PublishCA(ctx, Actor, string(t), string(pem)); err != nil {
			return nil, fmt.Errorf("broker: publish the %s CA: %w", t, err)
		}
	}
	ln := o.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Proxy.Listen); err != nil {
			return nil, fmt.Errorf("broker: API listener (proxy.listen): %w", err)
		}
	}
	b.Addr = ln.Addr().String()
	b.ProxyAddr = cfg.Proxy.PublicAddr
	if b.ProxyAddr == "" || strings.HasSuffix(b.ProxyAddr, ":0") {
		b.ProxyAddr = b.Addr
	}
	if b.HostCert, err = HostCertificate(b.CAs, ca.ProxyHostID, hostNames(cfg, b.ProxyAddr, b.Addr)); err != nil {
		ln.Close()
		return nil, err
	}
	if o.Login.WebAuthnOrigin == "" {
		// Security keys are bound to the origin browsers reach the web
		// UI at.
		o.Login.WebAuthnOrigin = "https://" + b.ProxyAddr
	}
	b.Login = login.New(b.Store, b.CAs, o.Audit, o.Login)
	b.Admin = admin.New(b.Store, b.CAs, b.Login, b.ProxyAddr)
	// Which databases some proxy routes: the lists say online or offline.
	pkv, err := presence.Ensure(ctx, o.JS, cfg.NATS.Replicas)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	if b.Presence, err = presence.Watch(ctx, pkv); err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	b.PresenceKV = pkv
	b.ProxyNames = proxyNames(b.CAs, b.HostCert, b.Presence)
	b.Admin.SetPresence(b.Presence)
	b.API = apiserver.New(b.Store, b.Login, b.Admin, o.Log.With("component", "api"))
	// The access-request workflow and locks serve their own API paths.
	if b.Requests, err = requests.New(ctx, o.JS, b.Store, requests.Options{Log: o.Log.With("component", "requests"), Actor: Actor}); err != nil {
		ln.Close()
		return nil, err
	}
	requests.Mount(b.API, b.Requests, b.Login, b.Admin.Certificate)
	locks.Mount(b.API, b.Store)
	sessions.Mount(b.API, o.JS)
	// The web UI at /, beside the API's /v1/ paths on the same listener.
	flow := oidcflow.Mount(b.API, oidcflow.Options{Store: b.Store, Login: b.Login, Certificate: b.Admin.Certificate,
		ProxyAddr: b.ProxyAddr, Log: o.Log.With("component", "sso")})
	// Web sessions live in NATS, so every broker serves them and they
	// outlive a restart.
	webSessions, err := webui.EnsureSessions(ctx, o.JS, cfg.NATS.Replicas)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	ui := webui.Mount(b.API, webui.Options{Sessions: webSessions, Login: b.Login, Requests: b.Requests, Store: b.Store, Admin: b.Admin, JS: o.JS,
		Exporters: cfg.Exporters, Presence: b.Presence, Log: o.Log.With("component", "webui")})
	flow.SetWeb(ui)
	go b.Requests.Run(ctx)
	go func() {
		tc := apiserver.TLSConfig(b.HostCert)
		tc.GetCertificate = b.ProxyNames
		err := b.API.Serve(ctx, ln, tc)
		b.close()
		b.done <- err
	}()
	return b, nil
}

// Wait blocks until the API stopped (ctx of Start ended) and returns why,
// nil for a shutdown.
func (b *Broker) Wait() error { return <-b.done }

func (b *Broker) close() {
	if b.Trail != nil {
		b.Trail.Stop()
	}
	if b.Guard != nil {
		b.Guard.Stop()
	}
	if b.Requests != nil {
		b.Requests.Close()
	}
	if b.Store != nil {
		b.Store.Close()
	}
	if b.unlock != nil {
		b.unlock()
		b.unlock = nil
	}
}

// HostCertificate issues the API's TLS certificate with a fresh key: a new
// one at every start, so the key never touches the disk. Clients pin the
// host CA, not this certificate, which is why the CA follows it in the
// chain.
func HostCertificate(cas *ca.Authorities, hostID string, names []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, _, err := cas.IssueHost(key.Public(), hostID, names, 0)
	if err != nil {
		return tls.Certificate{}, err
	}
	hostCA, err := cas.Cert(ca.Host)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, hostCA.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// proxyNames answers a ClientHello naming a host the API's certificate
// does not: a proxy without the broker splices the API's connections here
// unread, so a client that dialed that proxy by name expects a
// certificate for it. The name must be the host of a proxy in presence
// (which only proxies and brokers write); the certificate, issued once
// per name and kept in memory, has the proxies' host id, and its key
// never leaves this process. Any other name gets the API's own
// certificate (nil, nil).
func proxyNames(cas *ca.Authorities, own tls.Certificate, view *presence.View) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	var mu sync.Mutex
	issued := map[string]*tls.Certificate{}
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		name := strings.ToLower(hello.ServerName)
		if name == "" || own.Leaf.VerifyHostname(name) == nil {
			return nil, nil
		}
		known := false
		for _, p := range view.Proxies() {
			if host, _, err := net.SplitHostPort(p.Addr); err == nil && strings.EqualFold(host, name) {
				known = true
			}
		}
		if !known {
			return nil, nil
		}
		mu.Lock()
		defer mu.Unlock()
		if c := issued[name]; c != nil && time.Now().Before(c.Leaf.NotAfter) {
			return c, nil
		}
		c, err := HostCertificate(cas, ca.ProxyHostID, []string{name})
		if err != nil {
			return nil, err
		}
		issued[name] = &c
		return &c, nil
	}
}

// hostNames are the names the API's certificate is valid for: the hosts of
// the public and listen addresses, and the loopback names, so that a
// client on the broker's machine can always connect.
func hostNames(cfg *config.Config, addrs ...string) []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	add := func(h string) {
		if h == "" || h == "0.0.0.0" || h == "::" {
			if hn, err := os.Hostname(); err == nil && h != "" {
				h = hn
			} else {
				return
			}
		}
		for _, n := range names {
			if n == h {
				return
			}
		}
		names = append(names, h)
	}
	for _, a := range append(addrs, cfg.Proxy.Listen, cfg.Proxy.PublicAddr) {
		if h, _, err := net.SplitHostPort(a); err == nil {
			add(h)
		}
	}
	return names
}

// lockPath is the file a running broker holds locked.
func lockPath(dataDir string) string { return filepath.Join(dataDir, "broker.lock") }

// lockDataDir takes the broker lock of dataDir, waiting up to wait for an
// admin command that holds it briefly.
func lockDataDir(ctx context.Context, dataDir string, wait time.Duration) (func(), error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("broker: data dir: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		unlock, err := tryLock(lockPath(dataDir))
		if err == nil {
			return unlock, nil
		}
		if !errors.Is(err, errLocked) || time.Now().After(deadline) {
			return nil, fmt.Errorf("broker: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var errLocked = errors.New("locked by another process")

// tryLock takes an exclusive lock on path without waiting.
func tryLock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, errLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
