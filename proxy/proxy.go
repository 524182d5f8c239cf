// Package proxy serves the one public port of a Tollgate cluster. It
// reads each connection's TLS ClientHello without answering it and
// routes on it:
//
//   - ALPN tunnel.ALPN: an agent opening its reverse tunnel. The proxy
//     terminates this TLS (and only this one), requires the agent's host
//     certificate, and keeps a yamux session with it.
//   - an SNI naming a database an agent serves through a tunnel: the
//     connection is spliced, ClientHello included, onto a new stream of
//     that agent's tunnel. The client's TLS ends at the agent, so the
//     proxy holds no key that decrypts a database session.
//   - an SNI naming a database some agent serves through another proxy
//     (presence in JetStream says which): the connection goes on to that
//     proxy over mutual TLS with ALPN PeerALPN, still unread.
//   - a registered database no agent serves through any proxy: a TLS
//     alert unrecognized_name (see OfflineAlert) and an event.
//   - anything else (the HTTPS API) is handed to the server reading
//     Handoff, in the same process; a proxy without the broker beside it
//     splices it, unread, to a broker's port (Options.Upstream).
//
// PostgreSQL clients that open with an SSLRequest get their 'S' from the
// proxy, which then routes on the ClientHello that follows; the agent
// accepts TLS from the first byte, so nothing else changes for it. A
// cancel request sent without TLS names no database and is offered to
// every agent (routeCancel). ALPN natsserver.ProxyALPN is an agent's
// event-plane connection, relayed to the NATS server (serveEvents).
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// Recorder stores the proxy's audit events.
type Recorder interface {
	Publish(ctx context.Context, ev events.Event) error
}

// Options configure New.
type Options struct {
	// Listener is the public port.
	Listener net.Listener
	// Handoff receives the connections that are neither tunnels nor
	// database sessions; nil closes them.
	Handoff *Handoff
	// Cert is the proxy's certificate for the TLS of agent tunnels (the
	// broker's host certificate); AgentCAs verifies agents (the host CA).
	Cert     tls.Certificate
	AgentCAs *x509.CertPool
	// GetCertificate, when set, may answer a ClientHello with another
	// certificate than Cert (tls.Config.GetCertificate): the broker's
	// proxy answers agents that reached it through a proxy without the
	// broker under that proxy's name.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Registered looks a database up in STATE: whether it is one of the
	// cluster's and the host id of the agent it is registered to. A
	// ClientHello naming a registered database no connected agent serves
	// is refused rather than handed to the API, and a registered database
	// is routed only to the agent it is registered to, so that an agent
	// whose certificate also names it cannot draw its sessions. nil means
	// only names some agent announced since the proxy started, routed by
	// certificate alone.
	Registered func(name string) (hostID string, ok bool)
	// Recorder and Cluster, when set, record refused database
	// connections as db.session.rejected events.
	Recorder Recorder
	Cluster  string
	// RejectWindow is the aggregation window of refusals;
	// agent.DefaultRejectWindow when zero.
	RejectWindow time.Duration
	Log          *slog.Logger
	// HelloTimeout bounds the wait for the first bytes and the
	// ClientHello; 10 s when zero.
	HelloTimeout time.Duration
	// Presence, when set, records in JetStream the proxy itself and the
	// routes of the agent tunnels it holds, while Serve runs; View reads the routes of every proxy, so
	// that a connection for an agent tunneled to another proxy goes on
	// there and a database no agent serves anywhere is answered offline.
	Presence *presence.Announcer
	View     *presence.View
	// Events, when set, relays agents' NATS connections (ALPN
	// natsserver.ProxyALPN) to the event plane.
	Events *EventPlane
	// Renew, when set, returns a fresh certificate to take Cert's place,
	// and Serve calls it once the current one is in the last fifth of its
	// life (as an agent renews its host certificate), retrying until it
	// works: tunnels, forwards between proxies and the event relay then
	// present the new one, without a restart; established sessions keep
	// theirs.
	Renew func(ctx context.Context) (tls.Certificate, error)
	// Upstream, when set, opens a connection to a broker's port for a
	// proxy without the broker beside it (Handoff nil): what this proxy
	// does not route itself (the HTTPS API, the web UI, agents' event
	// plane without Events, a database no proxy routes) goes there whole,
	// ClientHello included and unread. The client's TLS, and the user
	// certificate the API authenticates it by, then ends at the broker
	// as if the client had dialed it; this proxy holds no key for it.
	Upstream func(ctx context.Context) (net.Conn, error)
}

// PeerALPN is the TLS application protocol of a connection one proxy
// forwards to another that holds the agent's tunnel. Both present the
// proxy's host certificate (common name PeerCommonName).
const PeerALPN = "tollgate-peer/1"

// PeerCommonName is the common name of the proxies' host certificate;
// the broker refuses it as an agent's host id, so no agent can pose as a
// proxy forwarding a connection.
const PeerCommonName = ca.ProxyHostID

// OfflineAlert is the TLS alert (unrecognized_name, 112) a proxy answers
// a ClientHello for a registered database no agent serves. The user's TLS
// ends at the agent, and the proxy holds no certificate for a database
// name (that key would let it read sessions), so it cannot say more
// inside TLS; tg turns this alert into the protocol's own error,
// "database X is offline: no agent connected". A native client shows the
// alert as its TLS library names it: psql (libpq with OpenSSL) "SSL error:
// tlsv1 unrecognized name", a Go client (pgx) "remote error: tls:
// unrecognized name" (TestTunnelEndToEnd); the database's name and the
// word offline are in the proxy's db.session.rejected event only.
const OfflineAlert = 112

// Server is a running proxy.
type Server struct {
	o   Options
	tun *tls.Config
	// cert is the certificate presented now: Options.Cert, then each
	// renewal's.
	cert atomic.Pointer[tls.Certificate]

	mu     sync.Mutex
	agents map[string][]*agentTunnel // by database
	known  map[string]bool           // every database announced
	conns  map[net.Conn]struct{}
	// closing is set once Serve's context ended.
	closing bool
	rejects *agent.Rejections
}

// agentTunnel is one agent's open session.
type agentTunnel struct {
	hostID string
	sess   *yamux.Session
	dbs    []string
}

// New returns a proxy on o.Listener; Serve runs it.
func New(o Options) (*Server, error) {
	if o.Listener == nil {
		return nil, errors.New("proxy: no listener")
	}
	if o.AgentCAs == nil || len(o.Cert.Certificate) == 0 {
		return nil, errors.New("proxy: the tunnel certificate and the agents' CA are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.HelloTimeout <= 0 {
		o.HelloTimeout = 10 * time.Second
	}
	s := &Server{o: o, agents: map[string][]*agentTunnel{}, known: map[string]bool{}, conns: map[net.Conn]struct{}{}}
	if o.Recorder != nil {
		s.rejects = agent.NewRejections(o.RejectWindow, 0, func(ev *events.SessionRejected) {
			ev.Cluster = o.Cluster
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := o.Recorder.Publish(ctx, ev); err != nil {
				o.Log.Warn("proxy: refusal not recorded", "err", err)
			}
		})
	}
	if o.Cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(o.Cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("proxy: the tunnel certificate: %w", err)
		}
		o.Cert.Leaf = leaf
		s.o.Cert.Leaf = leaf
	}
	s.cert.Store(&o.Cert)
	s.tun = &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if o.GetCertificate != nil {
				if c, err := o.GetCertificate(h); c != nil || err != nil {
					return c, err
				}
			}
			return s.cert.Load(), nil
		},
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  o.AgentCAs,
		NextProtos: []string{tunnel.ALPN, PeerALPN, natsserver.ProxyALPN},
	}
	return s, nil
}

// Addr is the public port's address.
func (s *Server) Addr() net.Addr { return s.o.Listener.Addr() }

// Serve accepts connections until ctx ends, then closes the listener,
// the tunnels and every connection it spliced.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		s.o.Listener.Close()
		if s.o.Handoff != nil {
			s.o.Handoff.Close()
		}
		s.mu.Lock()
		s.closing = true
		for c := range s.conns {
			c.Close()
		}
		for _, ts := range s.agents {
			for _, t := range ts {
				t.sess.Close()
			}
		}
		s.mu.Unlock()
	})
	defer stop()
	if s.rejects != nil {
		defer s.rejects.Close()
	}
	if s.o.Renew != nil {
		go s.renew(ctx)
	}
	if p := s.o.Presence; p != nil {
		// Withdrawn when Serve returns: a proxy stopped cleanly is gone
		// from presence at once; one that dies lapses with its lease.
		pctx, cancel := context.WithCancel(ctx)
		announced := make(chan struct{})
		go func() { p.Run(pctx); close(announced) }()
		defer func() { cancel(); <-announced }()
	}
	for {
		c, err := s.o.Listener.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go s.handle(ctx, c)
	}
}

// Certificate is the certificate the proxy presents now.
func (s *Server) Certificate() *x509.Certificate { return s.cert.Load().Leaf }

// renewal times: a certificate is renewed in the last fifth of its life;
// a failed renewal is retried after a fiftieth of the life, between a
// second and a minute.
func renewAt(leaf *x509.Certificate) time.Time {
	return leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 5)
}

func renewRetry(leaf *x509.Certificate) time.Duration {
	return min(max(leaf.NotAfter.Sub(leaf.NotBefore)/50, time.Second), time.Minute)
}

// renew keeps the certificate fresh until ctx ends.
func (s *Server) renew(ctx context.Context) {
	for {
		leaf := s.cert.Load().Leaf
		// Never sooner than a retry would be: a certificate born in its
		// last fifth (its life is short, and the CA backdates it) is not
		// renewed in a loop.
		wait := max(time.Until(renewAt(leaf)), renewRetry(leaf))
		for {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			c, err := s.o.Renew(ctx)
			if err == nil && c.Leaf == nil && len(c.Certificate) > 0 {
				c.Leaf, err = x509.ParseCertificate(c.Certificate[0])
			}
			if err == nil && len(c.Certificate) == 0 {
				err = errors.New("no certificate")
			}
			if err == nil {
				s.cert.Store(&c)
				s.o.Log.Info("proxy: certificate renewed", "not_after", c.Leaf.NotAfter)
				break
			}
			if ctx.Err() != nil {
				return
			}
			wait = renewRetry(leaf)
			s.o.Log.Warn("proxy: certificate not renewed", "err", err, "not_after", leaf.NotAfter, "retry_in", wait)
		}
	}
}

// Databases returns the databases routed to a connected agent, each with
// the host ids serving it.
func (s *Server) Databases() map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]string{}
	for db, ts := range s.agents {
		for _, t := range ts {
			out[db] = append(out[db], t.hostID)
		}
	}
	return out
}

// track keeps c to close at shutdown; the returned func forgets it.
func (s *Server) track(c net.Conn) (func(), bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, false
	}
	s.conns[c] = struct{}{}
	return func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}, true
}

// sslRequest is a PostgreSQL SSLRequest: length 8, code 80877103.
var sslRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

// gssencRequest is a PostgreSQL GSSENCRequest: length 8, code 80877104.
var gssencRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}

// cancelRequest opens a PostgreSQL CancelRequest: length 16, code
// 80877102.
var cancelRequest = []byte{0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e}

func (s *Server) handle(ctx context.Context, c net.Conn) {
	log := s.o.Log.With("remote", c.RemoteAddr().String())
	_ = c.SetReadDeadline(time.Now().Add(s.o.HelloTimeout))
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		c.Close() // a port check
		return
	}
	var conn net.Conn = newReplayConn(c, first[:])
	postgres := false
	if first[0] != 0x16 { // not a TLS handshake record
		if !s.postgresStartup(c, first[0], log) {
			c.Close()
			return
		}
		conn, postgres = c, true
	}
	_ = c.SetReadDeadline(time.Time{})
	hello, conn, err := peekHello(conn, s.o.HelloTimeout)
	if err != nil {
		log.Info("proxy: no TLS ClientHello", "err", err)
		s.reject(c, events.RejectTLSHandshake, "", err)
		c.Close()
		return
	}
	switch {
	case slices.Contains(hello.ALPN, tunnel.ALPN):
		s.serveTunnel(ctx, conn, log)
		return
	case slices.Contains(hello.ALPN, PeerALPN):
		s.servePeer(ctx, conn, log)
		return
	case slices.Contains(hello.ALPN, natsserver.ProxyALPN):
		if s.o.Events == nil && s.o.Upstream != nil {
			// The broker's proxy checks the agent's certificate and
			// relays it to the event plane.
			s.toUpstream(ctx, conn, false, log)
		} else {
			s.serveEvents(ctx, conn, log)
		}
		return
	case hello.ServerName != "":
		if t, db := s.route(hello.ServerName); t != nil {
			s.splice(conn, c.RemoteAddr().String(), t, db, hello.ServerName, log)
			return
		}
		if s.forward(conn, c.RemoteAddr().String(), hello.ServerName, log) {
			return
		}
		known := s.isDatabase(hello.ServerName)
		if s.o.Upstream != nil && !known {
			// The broker knows every registered database: it answers
			// an offline one, or the API takes the connection.
			s.toUpstream(ctx, conn, postgres, log)
			return
		}
		if postgres || known {
			err, reason := fmt.Errorf("no database %s", hello.ServerName), events.RejectUnknownDB
			if known {
				db := firstLabelIfKnown(hello.ServerName, s.isDatabase)
				err, reason = fmt.Errorf("database %s is offline: no agent connected", db), events.RejectOffline
				// Fatal alert, unrecognized_name: see OfflineAlert.
				_, _ = c.Write([]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, OfflineAlert})
			}
			log.Info("proxy: refused", "sni", hello.ServerName, "err", err)
			s.reject(c, reason, hello.ServerName, err)
			c.Close()
			return
		}
	case postgres:
		err := errors.New("no TLS server name (SNI) to route on")
		log.Info("proxy: refused", "err", err)
		s.reject(c, events.RejectUnknownDB, "", err)
		c.Close()
		return
	}
	if s.o.Handoff == nil && s.o.Upstream != nil {
		s.toUpstream(ctx, conn, false, log)
		return
	}
	if s.o.Handoff == nil || !s.o.Handoff.deliver(conn) {
		conn.Close()
	}
}

// toUpstream splices conn, its first bytes unread, to a broker's port
// (Options.Upstream). postgres says this proxy answered the client's
// SSLRequest: the broker's port wants one too, and its 'S' is not passed
// on.
func (s *Server) toUpstream(ctx context.Context, conn net.Conn, postgres bool, log *slog.Logger) {
	dctx, cancel := context.WithTimeout(ctx, s.o.HelloTimeout)
	defer cancel()
	up, err := s.o.Upstream(dctx)
	if err != nil {
		log.Warn("proxy: the broker is unreachable", "err", err)
		conn.Close()
		return
	}
	if postgres {
		_ = up.SetDeadline(time.Now().Add(s.o.HelloTimeout))
		var ans [1]byte
		if _, err = up.Write(sslRequest); err == nil {
			_, err = io.ReadFull(up, ans[:])
		}
		if err != nil || ans[0] != 'S' {
			log.Warn("proxy: the broker did not accept TLS after an SSLRequest", "err", err, "answer", ans[0])
			up.Close()
			conn.Close()
			return
		}
		_ = up.SetDeadline(time.Time{})
	}
	forget, ok := s.track(conn)
	if !ok {
		up.Close()
		conn.Close()
		return
	}
	defer forget()
	Splice(conn, up)
}

// postgresStartup answers a PostgreSQL client that opens in plain text:
// a GSSENCRequest gets 'N' (the client then asks for TLS, as it would of
// a server without GSSAPI encryption), an SSLRequest 'S'; after that the
// client sends its ClientHello. A cancel request goes to routeCancel.
// Anything else is refused and recorded. first is the byte already read.
func (s *Server) postgresStartup(c net.Conn, first byte, log *slog.Logger) bool {
	msg := make([]byte, len(sslRequest))
	msg[0] = first
	for tries := 0; ; tries++ {
		err := errors.New("the connection did not start with TLS")
		if msg[0] == 0 && readFull(c, msg[1:]) == nil {
			switch string(msg) {
			case string(sslRequest):
				// The agent would answer 'S' too; answering here lets
				// the proxy read the ClientHello and route on it.
				_, err := c.Write([]byte{'S'})
				return err == nil
			case string(gssencRequest):
				if tries == 0 {
					if _, err := c.Write([]byte{'N'}); err != nil {
						return false
					}
					if readFull(c, msg[:1]) != nil {
						return false
					}
					continue
				}
			case string(cancelRequest):
				s.routeCancel(c, log)
				return false
			}
		}
		log.Info("proxy: refused", "err", err)
		s.reject(c, events.RejectNotTLS, "", err)
		return false
	}
}

func readFull(c net.Conn, b []byte) error {
	_, err := io.ReadFull(c, b)
	return err
}

// isDatabase says whether name is a database of the cluster.
func (s *Server) isDatabase(name string) bool {
	s.mu.Lock()
	known := s.known[name] || s.known[firstLabel(name)]
	s.mu.Unlock()
	if known {
		return true
	}
	if s.o.Registered == nil {
		return false
	}
	_, ok := s.o.Registered(name)
	if !ok {
		_, ok = s.o.Registered(firstLabel(name))
	}
	return ok
}

// route finds the tunnel for an SNI: the name itself, else its first
// label (pg1.db.example.com reaches pg1), as the agent itself routes.
// Among the agents serving it, those of the host STATE registered it to
// qualify, and the one that connected last serves it: the one most likely
// alive.
func (s *Server) route(sni string) (*agentTunnel, string) {
	for _, name := range []string{sni, firstLabel(sni)} {
		owner, registered := "", false
		if s.o.Registered != nil {
			owner, registered = s.o.Registered(name)
		}
		s.mu.Lock()
		ts := s.agents[name]
		for i := len(ts) - 1; i >= 0; i-- {
			if !registered || ts[i].hostID == owner {
				t := ts[i]
				s.mu.Unlock()
				return t, name
			}
		}
		s.mu.Unlock()
		if len(ts) > 0 {
			s.o.Log.Warn("proxy: the agents with a tunnel for a database are not the host it is registered to",
				"database", name, "registered_to", owner)
		}
	}
	return nil, ""
}

func firstLabel(name string) string {
	if i := strings.IndexByte(name, '.'); i > 0 {
		return name[:i]
	}
	return name
}

// reject records a refused connection, aggregated per source and reason
// as the agent aggregates its own refusals, so a flood of them makes a few
// events; without a recorder the log line is all there is.
func (s *Server) reject(c net.Conn, reason, sni string, err error) {
	if s.rejects == nil {
		return
	}
	ev := agent.RejectedFrom(c.RemoteAddr().String(), reason, err)
	ev.SNI = sni
	if (reason == events.RejectUnknownDB || reason == events.RejectOffline) && s.isDatabase(sni) {
		// Registered, but no agent connected.
		ev.Service = firstLabelIfKnown(sni, s.isDatabase)
	}
	s.rejects.Add(ev)
}

// firstLabelIfKnown is the database an SNI names: itself or its first
// label, whichever is a database; the SNI itself when neither is.
func firstLabelIfKnown(sni string, known func(string) bool) string {
	if !known(sni) && known(firstLabel(sni)) {
		return firstLabel(sni)
	}
	return sni
}

// Handoff is a net.Listener fed by the proxy with the connections it does
// not route itself, their first bytes replayed: the broker's HTTPS server
// serves it as it would its own listener.
type Handoff struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// NewHandoff returns a listener that reports addr (the public port).
func NewHandoff(addr net.Addr) *Handoff {
	return &Handoff{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (h *Handoff) deliver(c net.Conn) bool {
	select {
	case h.conns <- c:
		return true
	case <-h.done:
		return false
	}
}

// Accept returns the next connection handed off.
func (h *Handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept; the proxy's own listener stays the proxy's.
func (h *Handoff) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

// Addr is the public port's address.
func (h *Handoff) Addr() net.Addr { return h.addr }
