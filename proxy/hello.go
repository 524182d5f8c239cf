package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"time"
)

// clientHello is what routing needs of a TLS ClientHello.
type clientHello struct {
	ServerName string
	ALPN       []string
}

// errPeeked stops the TLS handshake once the ClientHello was read.
var errPeeked = errors.New("proxy: client hello read")

// peekHello reads the TLS ClientHello at the start of c without
// answering it and returns it with a connection that replays every byte
// read, so whoever handles the connection next (the proxy's own TLS for
// tunnels, an agent through a tunnel, the API) sees it from its first
// byte.
//
// crypto/tls does the parsing: the handshake runs on a connection that
// records what it reads and swallows what it writes, and stops in
// GetConfigForClient, which is called after the ClientHello is parsed and
// before any answer or key exchange. Go's parser is maintained and fuzzed
// and copes with a ClientHello split over several records, which a
// hand-written one would have to get right itself. It may read past the
// ClientHello; the recording replays that too.
func peekHello(c net.Conn, timeout time.Duration) (*clientHello, net.Conn, error) {
	rec := &recordingConn{Conn: c}
	var hello *clientHello
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	err := tls.Server(rec, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			hello = &clientHello{ServerName: h.ServerName, ALPN: append([]string(nil), h.SupportedProtos...)}
			return nil, errPeeked
		},
	}).Handshake()
	_ = c.SetReadDeadline(time.Time{})
	if hello == nil {
		if err == nil {
			err = errors.New("proxy: no client hello")
		}
		return nil, nil, err
	}
	return hello, newReplayConn(c, rec.buf.Bytes()), nil
}

// recordingConn keeps what is read and drops what is written: the alert
// crypto/tls sends when the peek stops the handshake never reaches the
// client.
type recordingConn struct {
	net.Conn
	buf bytes.Buffer
}

func (r *recordingConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.buf.Write(p[:n])
	return n, err
}

func (r *recordingConn) Write(p []byte) (int, error) { return len(p), nil }

// replayConn reads the bytes already taken from the connection first.
type replayConn struct {
	net.Conn
	pending []byte
}

func newReplayConn(c net.Conn, pending []byte) *replayConn {
	return &replayConn{Conn: c, pending: append([]byte(nil), pending...)}
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// CloseWrite half-closes the underlying TCP connection.
func (r *replayConn) CloseWrite() error {
	if cw, ok := r.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return r.Conn.Close()
}
