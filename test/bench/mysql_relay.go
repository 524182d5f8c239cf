package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
)

// MySQLRelay is the floor for any MySQL proxy on this machine: TLS on both
// legs and a byte copy in between, no decoding, no audit. It passes the
// server's greeting through, reads the client's SSLRequest and sends it
// on, then terminates the client's TLS and opens TLS to the database with
// UpstreamTLS's client certificate, and copies bytes both ways.
type MySQLRelay struct {
	// ClientTLS is the relay's server side: its certificate.
	ClientTLS *tls.Config
	// Upstream is the database's host:port; UpstreamTLS its client side.
	Upstream    string
	UpstreamTLS *tls.Config
}

// Serve accepts connections until ctx is done.
func (r *MySQLRelay) Serve(ctx context.Context, ln net.Listener) error {
	return serveConns(ctx, ln, r.relay)
}

// mysqlPacket reads one packet (header and payload) as it is.
func mysqlPacket(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	pkt := make([]byte, 4+n)
	copy(pkt, hdr[:])
	_, err := io.ReadFull(r, pkt[4:])
	return pkt, err
}

// mysqlClientSSL is CLIENT_SSL in the handshake's capability flags.
const mysqlClientSSL = 1 << 11

func (r *MySQLRelay) relay(ctx context.Context, c net.Conn) error {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", r.Upstream)
	if err != nil {
		return err
	}
	defer raw.Close()
	greeting, err := mysqlPacket(raw)
	if err != nil {
		return err
	}
	if _, err := c.Write(greeting); err != nil {
		return err
	}
	req, err := mysqlPacket(c)
	if err != nil {
		return err
	}
	// An SSLRequest is the 32-byte head of a handshake response with
	// CLIENT_SSL set.
	if len(req) != 4+32 || req[5]&(mysqlClientSSL>>8) == 0 {
		return errors.New("mysql relay: the client did not ask for TLS")
	}
	if _, err := raw.Write(req); err != nil {
		return err
	}
	client := tls.Server(c, r.ClientTLS)
	if err := client.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("mysql relay: client TLS: %w", err)
	}
	server := tls.Client(raw, r.UpstreamTLS)
	if err := server.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("mysql relay: database TLS: %w", err)
	}
	pipe(client, server)
	return nil
}
