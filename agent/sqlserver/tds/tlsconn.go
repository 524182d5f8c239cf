package tds

import (
	"fmt"
	"io"
	"net"
)

// HandshakeConn carries a TLS handshake the way TDS 7.x does: every TLS
// record written during the handshake travels in PRELOGIN packets, and
// records are read back out of PRELOGIN packets. Once the handshake is
// over, Passthrough makes it a plain connection (TLS records then flow on
// the wire without TDS framing), after giving out any record bytes left
// over from the last handshake packet.
//
// Wrap it with tls.Client or tls.Server, call Handshake, then Flush (the
// last flight may still be buffered) and Passthrough.
type HandshakeConn struct {
	net.Conn
	// PacketSize bounds the PRELOGIN packets written (DefaultPacketSize
	// when 0).
	PacketSize  int
	wbuf        []byte
	rbuf        []byte
	passthrough bool
}

// NewHandshakeConn wraps c.
func NewHandshakeConn(c net.Conn) *HandshakeConn { return &HandshakeConn{Conn: c} }

// Write buffers handshake records until the next Read or Flush.
func (c *HandshakeConn) Write(b []byte) (int, error) {
	if c.passthrough {
		return c.Conn.Write(b)
	}
	c.wbuf = append(c.wbuf, b...)
	return len(b), nil
}

// Flush sends buffered handshake records in PRELOGIN packets, the last
// with EOM.
func (c *HandshakeConn) Flush() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	out := AppendPackets(nil, PacketPrelogin, c.wbuf, c.PacketSize, 0)
	c.wbuf = c.wbuf[:0]
	_, err := c.Conn.Write(out)
	return err
}

// Read returns handshake record bytes from PRELOGIN packets, sending what
// was written first (the peer answers only a complete flight).
func (c *HandshakeConn) Read(b []byte) (int, error) {
	if len(c.rbuf) > 0 {
		n := copy(b, c.rbuf)
		c.rbuf = c.rbuf[n:]
		return n, nil
	}
	if c.passthrough {
		return c.Conn.Read(b)
	}
	if err := c.Flush(); err != nil {
		return 0, err
	}
	for len(c.rbuf) == 0 {
		var hdr [HeaderLen]byte
		if _, err := io.ReadFull(c.Conn, hdr[:]); err != nil {
			return 0, err
		}
		h, err := ParseHeader(hdr[:], MaxPacketSize)
		if err != nil {
			return 0, fmt.Errorf("TLS handshake inside TDS: %w", err)
		}
		if h.Type != PacketPrelogin {
			return 0, &ProtocolError{Reason: fmt.Sprintf("TLS handshake inside TDS: got a %s packet, want PRELOGIN", PacketTypeName(h.Type)), Type: h.Type, Length: int(h.Length), Prefix: hdr[:]}
		}
		payload := make([]byte, int(h.Length)-HeaderLen)
		if _, err := io.ReadFull(c.Conn, payload); err != nil {
			return 0, err
		}
		c.rbuf = payload
	}
	n := copy(b, c.rbuf)
	c.rbuf = c.rbuf[n:]
	return n, nil
}

// Passthrough ends the handshake framing.
func (c *HandshakeConn) Passthrough() { c.passthrough = true }
