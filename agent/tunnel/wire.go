// Package tunnel is the agent's side of the reverse tunnel to a proxy and
// the small wire format both sides share.
//
// An agent that cannot be reached (behind NAT, no open port) dials the
// proxy, presents its host certificate with ALPN ALPN, and keeps a yamux
// session over that TLS connection. The agent opens the first stream and
// sends a Hello naming the databases it serves; the proxy answers with an
// Ack. Every later stream is opened by the proxy for one client
// connection: it starts with a preamble (the client's address) and then
// carries the client's bytes unchanged, from its TLS ClientHello on, so the
// client's TLS session ends at the agent and the proxy only splices.
package tunnel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

// ALPN is the TLS application protocol an agent offers when it dials a
// proxy for a tunnel; the proxy terminates TLS only for connections that
// offer it.
const ALPN = "tollgate-tunnel/1"

// Hello is what an agent says on the control stream when its tunnel opens.
type Hello struct {
	HostID    string   `json:"host_id"`
	Databases []string `json:"databases"`
}

// Ack is the proxy's answer to Hello: the databases it routes to this
// agent, or why it refused the tunnel.
type Ack struct {
	Databases []string `json:"databases,omitempty"`
	Error     string   `json:"error,omitempty"`
	// Proxy is the proxy's id in presence, so an agent that learns the
	// proxies from there knows which it already has a tunnel to.
	Proxy string `json:"proxy,omitempty"`
}

// Preamble opens every stream the proxy opens for a client connection.
type Preamble struct {
	// ClientAddr is the client's address as the proxy saw it, so the
	// agent's events and limits name the client rather than the proxy.
	ClientAddr string `json:"client_addr"`
	// ServerName is the SNI the proxy routed on.
	ServerName string `json:"server_name,omitempty"`
	// CancelProbe marks a PostgreSQL cancel request sent without TLS: it
	// names no database, so the proxy offers it to every agent it holds a
	// tunnel of, and each answers one byte, CancelMatched or
	// CancelUnknown, after the request. Only the agent whose key it is
	// records it; the proxy records one no agent knew.
	CancelProbe bool `json:"cancel_probe,omitempty"`
}

// Answers of an agent to a cancel probe.
const (
	CancelMatched = 'Y'
	CancelUnknown = 'N'
)

// maxPreamble bounds what a reader of a preamble accepts.
const maxPreamble = 4096

// WritePreamble writes p as a two-byte big-endian length and JSON.
func WritePreamble(w io.Writer, p Preamble) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if len(b) > maxPreamble {
		return fmt.Errorf("tunnel: preamble of %d bytes", len(b))
	}
	buf := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(buf, uint16(len(b)))
	copy(buf[2:], b)
	_, err = w.Write(buf)
	return err
}

// ReadPreamble reads what WritePreamble wrote and nothing more, so the
// client's bytes that follow stay in r.
func ReadPreamble(r io.Reader) (Preamble, error) {
	var p Preamble
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return p, fmt.Errorf("tunnel: preamble: %w", err)
	}
	l := int(binary.BigEndian.Uint16(n[:]))
	if l > maxPreamble {
		return p, fmt.Errorf("tunnel: preamble of %d bytes", l)
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return p, fmt.Errorf("tunnel: preamble: %w", err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("tunnel: preamble: %w", err)
	}
	if p.ClientAddr == "" {
		return p, errors.New("tunnel: preamble without a client address")
	}
	return p, nil
}

// Timing of the session, the same on both sides.
const (
	// KeepAliveInterval is how often each side pings the other: a tunnel
	// through a NAT or an egress proxy that silently dropped it is noticed
	// and redialed within about this long plus ConnectionWriteTimeout.
	KeepAliveInterval = 15 * time.Second
	// ConnectionWriteTimeout bounds a write on the session, the ping's
	// included.
	ConnectionWriteTimeout = 10 * time.Second
	// streamWindow is the receive window of each stream. yamux's default
	// (256 KiB) caps one stream at a window per round trip; a COPY of a
	// large table over a link with some latency needs more.
	streamWindow = 4 << 20
)

// SessionConfig is the yamux configuration of both ends of a tunnel.
func SessionConfig(logOutput io.Writer) *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = true
	c.KeepAliveInterval = KeepAliveInterval
	c.ConnectionWriteTimeout = ConnectionWriteTimeout
	c.MaxStreamWindowSize = streamWindow
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = 5 * time.Minute
	// A busy agent holds one stream per client session.
	c.AcceptBacklog = 1024
	if logOutput == nil {
		logOutput = io.Discard
	}
	c.LogOutput = logOutput
	return c
}
