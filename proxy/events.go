package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/tollgate-db/tollgate/events/natsserver"
)

// EventPlane lets agents reach the embedded NATS server through the
// proxy's port: an agent behind NAT needs no other way out.
type EventPlane struct {
	// Dial opens a connection to the server (in-process).
	Dial func() (net.Conn, error)
	// Sign signs the server's nonce with the nkey of part: the proxy
	// vouches for every host certificate the host CA signed with the
	// agent's permissions, and for a proxy's (PeerCommonName) with the
	// proxy part's, and no more.
	Sign func(part natsserver.Part, nonce []byte) (pub string, sig []byte, err error)
}

// maxControlLine bounds the INFO and CONNECT lines the relay reads.
const maxControlLine = 64 << 10

// serveEvents terminates an agent's TLS (its host certificate), then
// relays the NATS protocol to the server: the server's INFO goes to the
// agent without what would send it elsewhere (TLS, other servers'
// addresses), the agent's CONNECT goes to the server signed as the agent
// part (a proxy's as the proxy part), and the rest is copied both ways
// unread.
func (s *Server) serveEvents(ctx context.Context, raw net.Conn, log *slog.Logger) {
	ep := s.o.Events
	if ep == nil {
		log.Info("proxy: event-plane connection refused: this proxy does not relay it")
		raw.Close()
		return
	}
	conn := tls.Server(raw, s.tun)
	hctx, cancel := context.WithTimeout(ctx, s.o.HelloTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		log.Info("proxy: event-plane connection refused", "err", err)
		raw.Close()
		return
	}
	hostID := conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	log = log.With("host_id", hostID)
	up, err := ep.Dial()
	if err != nil {
		log.Warn("proxy: event plane unreachable", "err", err)
		conn.Close()
		return
	}
	part := natsserver.Agent
	if hostID == PeerCommonName {
		part = natsserver.Proxy
	}
	if err := s.relayHandshake(conn, up, ep, part); err != nil {
		log.Info("proxy: event-plane connection refused", "err", err)
		conn.Close()
		up.Close()
		return
	}
	forget, ok := s.track(conn)
	if !ok {
		conn.Close()
		up.Close()
		return
	}
	defer forget()
	log.Debug("proxy: event plane relayed")
	Splice(conn, up)
}

// relayHandshake passes INFO and CONNECT between agent and server as
// serveEvents says, with deadlines on both.
func (s *Server) relayHandshake(agent, up net.Conn, ep *EventPlane, part natsserver.Part) error {
	deadline := time.Now().Add(s.o.HelloTimeout)
	_ = agent.SetDeadline(deadline)
	_ = up.SetDeadline(deadline)
	defer agent.SetDeadline(time.Time{})
	defer up.SetDeadline(time.Time{})
	upR := bufio.NewReaderSize(up, 4096)
	info, err := controlLine(upR, "INFO ")
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	nonce, _ := info["nonce"].(string)
	for _, k := range []string{"tls_required", "tls_available", "tls_verify", "connect_urls", "ws_connect_urls", "nonce", "auth_required"} {
		delete(info, k)
	}
	// The agent signs nothing itself: the proxy signs for it below.
	if err := writeControl(agent, "INFO", info); err != nil {
		return err
	}
	agentR := bufio.NewReaderSize(agent, 4096)
	connect, err := controlLine(agentR, "CONNECT ")
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	for _, k := range []string{"user", "pass", "auth_token", "jwt", "nkey", "sig"} {
		delete(connect, k)
	}
	if nonce == "" {
		return errors.New("server: no nonce to sign in its INFO")
	}
	pub, sig, err := ep.Sign(part, []byte(nonce))
	if err != nil {
		return err
	}
	connect["nkey"], connect["sig"] = pub, base64.RawURLEncoding.EncodeToString(sig)
	if err := writeControl(up, "CONNECT", connect); err != nil {
		return err
	}
	// What either side sent after its line is passed on before the
	// splice takes over.
	if err := flushBuffered(agentR, up); err != nil {
		return err
	}
	return flushBuffered(upR, agent)
}

// controlLine reads one "VERB {json}\r\n" line and decodes its JSON.
func controlLine(r *bufio.Reader, verb string) (map[string]any, error) {
	var line []byte
	for {
		part, more, err := r.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, part...)
		if len(line) > maxControlLine {
			return nil, fmt.Errorf("%s line over %d bytes", verb, maxControlLine)
		}
		if !more {
			break
		}
	}
	rest, ok := bytes.CutPrefix(line, []byte(verb))
	if !ok {
		return nil, fmt.Errorf("want %q, got %.40q", verb, line)
	}
	var m map[string]any
	if err := json.Unmarshal(rest, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	return m, nil
}

func writeControl(w net.Conn, verb string, m map[string]any) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = w.Write(append(append([]byte(verb+" "), b...), '\r', '\n'))
	return err
}

func flushBuffered(r *bufio.Reader, w net.Conn) error {
	if n := r.Buffered(); n > 0 {
		b, _ := r.Peek(n)
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}
