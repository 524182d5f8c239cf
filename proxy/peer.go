package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/protocol"
)

// Answers of a proxy to a forwarded connection's preamble: whether it
// holds a tunnel for the database. The first proxy tries the next route,
// or answers offline, on a no.
const (
	peerYes = 'Y'
	peerNo  = 'N'
)

// forward carries conn, its ClientHello still unread, to another proxy
// that presence says holds a tunnel of an agent serving sni. It reports
// whether a proxy took the connection.
func (s *Server) forward(conn net.Conn, clientAddr, sni string, log *slog.Logger) bool {
	if s.o.View == nil {
		return false
	}
	self := ""
	if s.o.Presence != nil {
		self = s.o.Presence.ID()
	}
	for _, name := range []string{sni, firstLabel(sni)} {
		owner, registered := "", false
		if s.o.Registered != nil {
			owner, registered = s.o.Registered(name)
		}
		for _, r := range s.o.View.Routes(name) {
			if r.Proxy == self || (registered && r.HostID != owner) {
				continue
			}
			pc, err := s.dialPeer(r.ProxyAddr, clientAddr, sni)
			if err != nil {
				log.Info("proxy: the proxy presence names for the database did not take the connection", "database", name, "peer", r.Proxy, "addr", r.ProxyAddr, "err", err)
				continue
			}
			forget, ok := s.track(conn)
			if !ok {
				pc.Close()
				conn.Close()
				return true
			}
			log.Debug("proxy: forwarded", "database", name, "peer", r.Proxy)
			Splice(conn, pc)
			forget()
			return true
		}
	}
	return false
}

// dialPeer opens a forwarded connection to the proxy at addr and returns
// it once that proxy said it holds a tunnel for sni.
func (s *Server) dialPeer(addr, clientAddr, sni string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.o.HelloTimeout)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{KeepAlive: 30 * time.Second}, Config: &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: host,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.cert.Load(), nil
		},
		RootCAs:    s.o.AgentCAs,
		NextProtos: []string{PeerALPN},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.PeerCertificates[0].Subject.CommonName != PeerCommonName {
				return fmt.Errorf("%s is not a proxy (certificate of %q)", addr, cs.PeerCertificates[0].Subject.CommonName)
			}
			return nil
		},
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if err := tunnel.WritePreamble(c, tunnel.Preamble{ClientAddr: clientAddr, ServerName: sni}); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(s.o.HelloTimeout))
	var ans [1]byte
	if _, err := io.ReadFull(c, ans[:]); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadDeadline(time.Time{})
	if ans[0] != peerYes {
		c.Close()
		return nil, errors.New("it holds no tunnel for the database")
	}
	return c, nil
}

// servePeer takes a connection another proxy forwarded: mutual TLS with
// a proxy's certificate, a preamble naming the client and the SNI, then
// the client's bytes from its ClientHello on. It is routed only to a
// tunnel of this proxy, never forwarded again, so two proxies with stale
// presence cannot pass a connection back and forth.
func (s *Server) servePeer(ctx context.Context, raw net.Conn, log *slog.Logger) {
	conn := tls.Server(raw, s.tun)
	hctx, cancel := context.WithTimeout(ctx, s.o.HelloTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		log.Info("proxy: forwarded connection refused", "err", err)
		raw.Close()
		return
	}
	if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != PeerCommonName {
		log.Warn("proxy: forwarded connection from a host that is not a proxy refused", "host_id", cn)
		conn.Close()
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(s.o.HelloTimeout))
	p, err := tunnel.ReadPreamble(conn)
	if err != nil {
		log.Info("proxy: forwarded connection refused", "err", err)
		conn.Close()
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	t, db := s.route(p.ServerName)
	if t == nil {
		_, _ = conn.Write([]byte{peerNo})
		conn.Close()
		return
	}
	if _, err := conn.Write([]byte{peerYes}); err != nil {
		conn.Close()
		return
	}
	s.splice(conn, p.ClientAddr, t, db, p.ServerName, log.With("forwarded_by", raw.RemoteAddr().String()))
}

// routeCancel serves a PostgreSQL cancel request sent without TLS (libpq
// before 17 sends them so, whatever the session used). It names no
// database, only a backend's process id and a secret an agent issued, so
// it is offered to every agent this proxy holds a tunnel of; the agent
// whose key it is cancels and records it, the others only say no. Agents
// keep a tunnel to every proxy, so every agent is asked. A request no
// agent knew is recorded here, as an agent records one.
func (s *Server) routeCancel(c net.Conn, log *slog.Logger) {
	key := make([]byte, len(cancelRequest)+8)
	copy(key, cancelRequest)
	_ = c.SetReadDeadline(time.Now().Add(s.o.HelloTimeout))
	if _, err := io.ReadFull(c, key[len(cancelRequest):]); err != nil {
		return
	}
	s.mu.Lock()
	seen := map[*agentTunnel]bool{}
	var ts []*agentTunnel
	for _, list := range s.agents {
		for _, t := range list {
			if !seen[t] {
				seen[t] = true
				ts = append(ts, t)
			}
		}
	}
	s.mu.Unlock()
	answers := make(chan bool, len(ts))
	for _, t := range ts {
		go func() { answers <- s.offerCancel(t, c.RemoteAddr().String(), key) }()
	}
	matched := false
	for range ts {
		matched = <-answers || matched
	}
	if !matched {
		pid := binary.BigEndian.Uint32(key[8:12])
		err := fmt.Errorf("cancel request without TLS for backend %d with a key no agent connected to this proxy holds", pid)
		log.Info("proxy: refused", "err", err)
		ev := agent.RejectedFrom(c.RemoteAddr().String(), events.RejectUnknownCancelKey, err)
		ev.Protocol = protocol.Postgres
		if s.rejects != nil {
			s.rejects.Add(ev)
		}
	}
}

// offerCancel sends a cancel request to the agent of t and says whether
// the key was that agent's.
func (s *Server) offerCancel(t *agentTunnel, clientAddr string, key []byte) bool {
	st, err := t.sess.OpenStream()
	if err != nil {
		return false
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(s.o.HelloTimeout))
	if err := tunnel.WritePreamble(st, tunnel.Preamble{ClientAddr: clientAddr, CancelProbe: true}); err != nil {
		return false
	}
	if _, err := st.Write(key); err != nil {
		return false
	}
	var ans [1]byte
	_, err = io.ReadFull(st, ans[:])
	return err == nil && ans[0] == tunnel.CancelMatched
}
