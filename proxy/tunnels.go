package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tollgate-db/tollgate/agent/tunnel"
)

// The agents' reverse tunnels: accepting one, acknowledging the databases
// it may carry, and keeping its routes while it lives.

// serveTunnel terminates an agent's TLS, checks its certificate, reads
// its Hello and routes its databases to it until the session ends.
func (s *Server) serveTunnel(ctx context.Context, raw net.Conn, log *slog.Logger) {
	conn := tls.Server(raw, s.tun)
	hctx, cancel := context.WithTimeout(ctx, s.o.HelloTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		log.Info("proxy: agent tunnel refused", "err", err)
		raw.Close()
		return
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	hostID := leaf.Subject.CommonName
	log = log.With("host_id", hostID)
	sess, err := yamux.Server(tunnel.CoalesceConn(tunnel.BatchConn(conn)), tunnel.SessionConfig(slog.NewLogLogger(log.Handler(), slog.LevelDebug).Writer()))
	if err != nil {
		conn.Close()
		return
	}
	defer sess.Close()
	ctl, err := sess.AcceptStreamWithContext(hctx)
	if err != nil {
		log.Info("proxy: agent tunnel without hello", "err", err)
		return
	}
	_ = ctl.SetDeadline(time.Now().Add(s.o.HelloTimeout))
	var h tunnel.Hello
	if err := json.NewDecoder(ctl).Decode(&h); err != nil {
		log.Info("proxy: agent tunnel without hello", "err", err)
		return
	}
	// An agent is routed only the databases its certificate names: the
	// host CA certified them, so a stolen agent key cannot draw another
	// agent's clients to itself. Nor one STATE registers to another host:
	// route would never pick this tunnel for it, but presence would say
	// the agent serves it, and db ls and other proxies would believe it.
	var dbs, refused []string
	for _, d := range h.Databases {
		if d != "" && leaf.VerifyHostname(d) == nil && !slices.Contains(dbs, d) && !s.registeredElsewhere(d, hostID) {
			dbs = append(dbs, d)
		} else {
			refused = append(refused, d)
		}
	}
	ack := tunnel.Ack{Databases: dbs}
	if s.o.Presence != nil {
		ack.Proxy = s.o.Presence.ID()
	}
	if len(dbs) == 0 {
		ack.Error = fmt.Sprintf("the host certificate of %s names none of the databases %v", hostID, h.Databases)
	}
	if err := json.NewEncoder(ctl).Encode(ack); err != nil || ack.Error != "" {
		log.Info("proxy: agent tunnel refused", "err", ack.Error)
		return
	}
	_ = ctl.SetDeadline(time.Time{})
	if len(refused) > 0 {
		log.Warn("proxy: databases the agent's certificate does not name are not routed to it", "databases", refused)
	}
	t := &agentTunnel{hostID: hostID, sess: sess, dbs: dbs}
	s.mu.Lock()
	if ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	for _, d := range dbs {
		s.agents[d] = append(s.agents[d], t)
		s.known[d] = true
	}
	s.mu.Unlock()
	if p := s.o.Presence; p != nil {
		for _, d := range dbs {
			p.Add(ctx, d, hostID)
		}
	}
	log.Info("proxy: agent tunnel open", "databases", dbs)
	defer func() {
		s.mu.Lock()
		var gone []string
		for _, d := range dbs {
			s.agents[d] = slices.DeleteFunc(s.agents[d], func(x *agentTunnel) bool { return x == t })
			if !slices.ContainsFunc(s.agents[d], func(x *agentTunnel) bool { return x.hostID == hostID }) {
				gone = append(gone, d)
			}
			if len(s.agents[d]) == 0 {
				delete(s.agents, d)
			}
		}
		s.mu.Unlock()
		// The route goes at once, not when its lease runs out: another
		// proxy must not forward to a tunnel that is gone.
		if p := s.o.Presence; p != nil {
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			for _, d := range gone {
				p.Remove(rctx, d, hostID)
			}
			cancel()
		}
		log.Info("proxy: agent tunnel closed")
	}()
	// The agent opens no stream after the control stream; the session
	// ends when the control stream or the connection does.
	select {
	case <-sess.CloseChan():
	case <-ctx.Done():
	case <-closed(ctl):
	}
}

// registeredElsewhere says whether STATE registers db to a host other
// than hostID. A database not registered yet is not: an agent may open
// its tunnel before its registration is through.
func (s *Server) registeredElsewhere(db, hostID string) bool {
	if s.o.Registered == nil {
		return false
	}
	owner, ok := s.o.Registered(db)
	return ok && owner != hostID
}

// closed is done when the peer ends the control stream.
func closed(ctl net.Conn) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, ctl)
		close(ch)
	}()
	return ch
}
