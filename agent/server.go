package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/protocol"
)

// ServerConfig configures the agent's listener.
type ServerConfig struct {
	// Cluster names the Tollgate cluster in every event.
	Cluster string
	// Databases the agent serves; SNI names one of them.
	Databases []config.Database
	// TLS holds the agent's own certificate (Certificates or
	// GetCertificate). Client authentication is set by the server.
	TLS *tls.Config
	// UserCAs verifies user certificates.
	UserCAs *x509.CertPool
	// Identify reads the identity a verified user certificate carries
	// (identity.FromCertificate).
	Identify func(*x509.Certificate) (identity.Identity, error)
	// Authorize is the access decision.
	Authorize Authorizer
	// Recorder stores audit events (events.Publisher).
	Recorder Recorder
	// ClientCert provides the certificate presented to databases.
	ClientCert ClientCertProvider
	// Engines by protocol name (protocol.Protocol.Name).
	Engines map[string]Engine
	// Plaintext answers connections that do not start with TLS; when nil,
	// the engine that implements PlaintextNegotiator does (PostgreSQL's,
	// whose clients ask for TLS in their own protocol), the first by
	// protocol name should there be several.
	Plaintext PlaintextNegotiator
	// HandshakeTimeout bounds everything before the engine takes over
	// (10s by default).
	HandshakeTimeout time.Duration
	// ShutdownGrace bounds how long Serve waits, once its context is done,
	// for sessions to store their last events (5s by default).
	ShutdownGrace time.Duration
	Logger        *slog.Logger
	// Lifecycle, when set, ends live sessions on locks, certificate and
	// grant ends and idleness, and refuses new ones under a lock; its Run
	// must be running.
	Lifecycle *Lifecycle
	// MaxConnections and MaxConnectionsPerUser bound the client
	// connections served at once, by the whole agent and by one user
	// (db_service.max_connections, max_connections_per_user); 0 means no
	// limit. A connection past a limit is refused after its TLS handshake,
	// through ClientConn.Reject wrapping ErrTooManyConnections, so the
	// client sees its protocol's own error.
	MaxConnections        int
	MaxConnectionsPerUser int
	// RejectWindow and RejectSources shape the db.session.rejected events
	// of connections refused before a session starts: per source and
	// reason, the first is reported at once and the rest of the window
	// (DefaultRejectWindow) counted in one event; beyond RejectSources
	// (DefaultRejectSources) sources, refusals are counted together.
	RejectWindow  time.Duration
	RejectSources int
}

// ErrTooManyConnections is wrapped by ClientConn.Reject when a connection
// is past db_service.max_connections or max_connections_per_user; engines
// report it with their protocol's code for too many connections.
var ErrTooManyConnections = errors.New("too many connections")

// Server accepts client connections over TLS and hands them to engines.
type Server struct {
	limits    connLimits
	cfg       ServerConfig
	tls       *tls.Config
	databases map[string]*Database
	names     []string
	log       *slog.Logger
	fallback  Engine
	env       *Env
	rejects   *rejections
}

// NewServer checks cfg and prepares the databases.
func NewServer(cfg ServerConfig) (*Server, error) {
	var missing []string
	if cfg.TLS == nil || (len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil) {
		missing = append(missing, "TLS (the agent's certificate)")
	}
	if cfg.UserCAs == nil {
		missing = append(missing, "UserCAs")
	}
	if cfg.Identify == nil {
		missing = append(missing, "Identify")
	}
	if cfg.Authorize == nil {
		missing = append(missing, "Authorize")
	}
	if cfg.Recorder == nil {
		missing = append(missing, "Recorder")
	}
	if cfg.ClientCert == nil {
		missing = append(missing, "ClientCert")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("agent: server config lacks %s", strings.Join(missing, ", "))
	}
	SetDefault(&cfg.HandshakeTimeout, 10*time.Second)
	SetDefault(&cfg.ShutdownGrace, 5*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Lifecycle != nil {
		cfg.Authorize = cfg.Lifecycle.Authorizer(cfg.Authorize)
	}
	s := &Server{cfg: cfg, databases: map[string]*Database{}, log: cfg.Logger}
	s.rejects = newRejections(cfg.RejectWindow, cfg.RejectSources, s.recordRejected)
	for _, c := range cfg.Databases {
		if _, dup := s.databases[c.Name]; dup {
			return nil, fmt.Errorf("agent: database %q is configured twice", c.Name)
		}
		if cfg.Engines[c.Protocol] == nil {
			return nil, fmt.Errorf("agent: database %q: no engine for protocol %q", c.Name, c.Protocol)
		}
		d, err := NewDatabase(c)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		s.databases[c.Name] = d
		s.names = append(s.names, c.Name)
	}
	sort.Strings(s.names)
	if s.cfg.Plaintext == nil {
		for _, name := range slices.Sorted(maps.Keys(cfg.Engines)) {
			if p, ok := cfg.Engines[name].(PlaintextNegotiator); ok {
				s.cfg.Plaintext = p
				break
			}
		}
	}
	if e, ok := s.cfg.Plaintext.(Engine); ok {
		s.fallback = e
	} else if len(cfg.Engines) == 1 {
		for _, e := range cfg.Engines {
			s.fallback = e
		}
	}
	s.tls = cfg.TLS.Clone()
	if s.tls.MinVersion < tls.VersionTLS12 {
		s.tls.MinVersion = tls.VersionTLS12
	}
	// The certificate is checked after the handshake so that a missing,
	// expired or foreign certificate gets an error in the database
	// protocol, which clients show, rather than a bare TLS alert.
	s.tls.ClientAuth = tls.RequestClientCert
	return s, nil
}

// Database returns a configured database by name.
func (s *Server) Database(name string) (*Database, bool) {
	d, ok := s.databases[name]
	return d, ok
}

// Serve accepts connections on every listener in lns until ctx is done,
// then closes them and every client connection and waits (up to
// ShutdownGrace) for sessions to store their last events. The listeners
// share the sessions, the limits and the shutdown: a MySQL port of its own
// (mysql.Engine.Listener) is served beside the agent's main one.
func (s *Server) Serve(ctx context.Context, lns ...net.Listener) error {
	if len(lns) == 0 {
		return errors.New("agent: serve: no listener")
	}
	bg, cancelBG := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBG()
	s.env = &Env{
		Cluster: s.cfg.Cluster, Recorder: s.cfg.Recorder, Authorize: s.cfg.Authorize,
		ClientCert: s.cfg.ClientCert, Logger: s.log, Background: bg, life: s.cfg.Lifecycle, rejects: s.rejects,
	}
	connCtx, cancelConns := context.WithCancel(ctx)
	defer cancelConns()
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() {
		for _, ln := range lns {
			ln.Close()
		}
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	accept := func(ln net.Listener) error {
		for {
			c, err := ln.Accept()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				return err
			}
			mu.Lock()
			if ctx.Err() != nil {
				mu.Unlock()
				c.Close()
				continue
			}
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				s.handle(connCtx, c)
			}()
		}
	}
	// The first listener to fail ends them all: an agent serving only part
	// of its ports would look up and refuse half its users.
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errs <- accept(ln) }()
	}
	err := <-errs
	for _, ln := range lns {
		ln.Close()
	}
	for range len(lns) - 1 {
		<-errs
	}
	cancelConns()
	wg.Wait()
	s.rejects.close()
	drained := make(chan struct{})
	go func() { s.env.drains.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(s.cfg.ShutdownGrace):
		s.log.Error("agent: shutting down with audit events not yet stored")
	}
	return err
}

func (s *Server) handle(ctx context.Context, raw net.Conn) {
	log := s.log.With("remote", raw.RemoteAddr().String())
	_ = raw.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	var proto string
	if pc, ok := raw.(ProtocolConn); ok {
		proto = pc.Protocol()
	}
	var act *activityConn
	if s.cfg.Lifecycle != nil {
		act = newActivityConn(raw)
		raw = act
	}
	remote := raw.RemoteAddr()
	pc := &prefixConn{Conn: raw, r: bufio.NewReaderSize(raw, 512)}
	if cp, ok := raw.(CancelProber); ok {
		pc.probe = cp.CancelProbe()
	} else if act != nil {
		if cp, ok := act.Conn.(CancelProber); ok {
			pc.probe = cp.CancelProbe()
		}
	}
	first, err := pc.r.Peek(1)
	if err != nil {
		// Opened and closed without a byte (a port check): nothing was
		// refused.
		return
	}
	if first[0] != tlsHandshakeRecord {
		if s.cfg.Plaintext == nil {
			log.Info("agent: connection did not start with TLS")
			s.rejects.add(s.rejectedEvent(remote, events.RejectNotTLS, errors.New("the connection did not start with TLS"), proto))
			return
		}
		ok, err := s.cfg.Plaintext.NegotiatePlaintext(ctx, pc, s.env)
		if err != nil {
			log.Info("agent: refused plaintext connection", "err", err)
			if !ok && ctx.Err() == nil {
				reason := events.RejectBadStartup
				if errors.Is(err, ErrPlaintextRefused) {
					reason = events.RejectNotTLS
				}
				s.rejects.add(s.rejectedEvent(remote, reason, err, proto))
			}
		}
		if !ok {
			return
		}
	}
	tc := tls.Server(pc, s.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		log.Info("agent: TLS handshake failed", "err", err)
		if ctx.Err() == nil {
			ev := s.rejectedEvent(remote, events.RejectTLSHandshake, err, proto)
			st := tc.ConnectionState()
			ev.SNI = st.ServerName
			if len(st.PeerCertificates) > 0 {
				ev.Cert = peerCertificate(st.PeerCertificates[0])
			}
			s.rejects.add(ev)
		}
		return
	}
	_ = raw.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	cc := &ClientConn{Conn: tc, ServerName: st.ServerName, Env: s.env}
	var reason string
	cc.Identity, reason, cc.Reject = s.verify(st.PeerCertificates)
	if cc.Reject == nil {
		reason = events.RejectUnknownDB
		cc.Database, cc.Reject = s.route(st.ServerName, proto)
	}
	// Connection limits: counted once the user is known, held until the
	// connection ends, refused in the engine's protocol.
	if cc.Reject == nil {
		release, err := s.limits.acquire(s.cfg.MaxConnections, s.cfg.MaxConnectionsPerUser, cc.Identity.User)
		if err != nil {
			reason, cc.Reject = events.RejectTooMany, err
		} else {
			defer release()
		}
	}
	if cc.Reject != nil {
		ev := s.rejectedEvent(remote, reason, cc.Reject, proto)
		ev.SNI = st.ServerName
		if len(st.PeerCertificates) > 0 {
			ev.Cert = peerCertificate(st.PeerCertificates[0])
		}
		if cc.Database != nil {
			ev.Service = cc.Database.Config.Name
		}
		// The user is the certificate's only once it was verified.
		if reason == events.RejectTooMany {
			ev.User, ev.Roles = cc.Identity.User, cc.Identity.Roles
		}
		s.rejects.add(ev)
	}
	if cc.Reject == nil && s.cfg.Lifecycle != nil {
		defer s.cfg.Lifecycle.admit(cc, act)()
	}
	// A refusal is told in the protocol the client speaks: its database's,
	// its port's, or the main port's (PostgreSQL's, which opens with TLS).
	eng := s.fallback
	if cc.Database != nil {
		eng = s.cfg.Engines[cc.Database.Config.Protocol]
	} else if e, ok := s.cfg.Engines[proto]; ok {
		eng = e
	}
	if eng == nil {
		log.Info("agent: connection refused", "err", cc.Reject)
		return
	}
	if err := eng.Serve(ctx, cc); err != nil {
		log.Info("agent: connection ended", "user", cc.Identity.User, "err", err)
	}
}

// verify checks the user certificate against the user CA and reads the
// identity it carries.
func (s *Server) verify(chain []*x509.Certificate) (identity.Identity, string, error) {
	if len(chain) == 0 {
		return identity.Identity{}, events.RejectNoCertificate, errors.New("no client certificate: log in with tg login and connect through tg proxy db")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots: s.cfg.UserCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return identity.Identity{}, events.RejectCertExpired, fmt.Errorf("client certificate of %q expired at %s: log in again with tg login",
				leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return identity.Identity{}, events.RejectCertUntrusted, fmt.Errorf("client certificate of %q is not trusted: %v", leaf.Subject.CommonName, err)
	}
	id, err := s.cfg.Identify(leaf)
	if err != nil {
		return identity.Identity{}, events.RejectBadIdentity, fmt.Errorf("client certificate of %q carries no usable identity: %v", leaf.Subject.CommonName, err)
	}
	return id, "", nil
}

// ErrPlaintextRefused is wrapped by a PlaintextNegotiator's error when it
// refused a well-formed request to go on without TLS (as opposed to bytes
// it could not read).
var ErrPlaintextRefused = errors.New("connection without TLS refused")

// rejectedEvent starts the event of a connection refused before a session.
func (s *Server) rejectedEvent(remote net.Addr, reason string, err error, proto string) *events.SessionRejected {
	ev := rejected(remote, reason, err)
	ev.Cluster = s.cfg.Cluster
	ev.Protocol = proto
	return ev
}

// recordRejected stores one db.session.rejected event. Refusals are rare
// next to statements and already aggregated, so it waits for the store.
func (s *Server) recordRejected(ev *events.SessionRejected) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.cfg.Recorder.Publish(ctx, ev); err != nil {
		s.log.Error("agent: refused connections not recorded", "reason", ev.Reason, "client", ev.ClientAddr,
			"count", ev.Count, "err", err)
	}
}

// ProtocolConn is a connection from a listener that serves one protocol
// only (a MySQL port of its own, mysql.Engine.Listener): routing then
// considers only the databases of that protocol.
type ProtocolConn interface {
	net.Conn
	Protocol() string
}

// route finds the database the SNI names: its full name, or the first label
// of a longer host name. Without SNI (a client connecting by IP address)
// the only database is chosen when there is exactly one (of proto, when the
// connection's port serves one protocol only).
func (s *Server) route(sni, proto string) (*Database, error) {
	names := s.names
	if proto != "" {
		names = slices.DeleteFunc(slices.Clone(names), func(n string) bool {
			return s.databases[n].Config.Protocol != proto
		})
	}
	if sni == "" {
		if len(names) == 1 {
			return s.databases[names[0]], nil
		}
		return nil, fmt.Errorf("the connection names no database: its TLS server name (SNI) must be one of %s", listNames(names))
	}
	var d *Database
	ok := false
	for _, n := range protocol.Databases(sni) {
		if d, ok = s.databases[n]; ok {
			break
		}
	}
	if !ok {
		return nil, fmt.Errorf("unknown database %q: this agent serves %s", sni, listNames(names))
	}
	if proto != "" && d.Config.Protocol != proto {
		return nil, fmt.Errorf("database %q speaks %s, and this port serves %s only: connect to the agent's main port", d.Config.Name, d.Config.Protocol, proto)
	}
	return d, nil
}

func listNames(names []string) string {
	if len(names) == 0 {
		return "(none configured)"
	}
	return strings.Join(names, ", ")
}

// tlsHandshakeRecord is the first byte of a TLS ClientHello record.
const tlsHandshakeRecord = 0x16

// prefixConn reads through a buffered reader so bytes peeked before TLS
// are not lost.
type prefixConn struct {
	net.Conn
	r     *bufio.Reader
	probe bool
}

// CancelProber is a connection that may carry a cancel request a proxy
// offers to every agent (tunnel.Preamble.CancelProbe): the engine answers
// whether the key is its own and records it only then.
type CancelProber interface {
	CancelProbe() bool
}

// CancelProbe passes on the connection's CancelProbe.
func (c *prefixConn) CancelProbe() bool { return c.probe }

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// NetConn is the connection under the buffer, for ClientConn.ResetOnClose.
func (c *prefixConn) NetConn() net.Conn { return c.Conn }
