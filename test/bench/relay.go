// Package bench holds end-to-end benchmark tooling. The relay here is the
// floor for any PostgreSQL proxy on this machine: TLS on both legs and a
// byte copy in between, no decoding, no audit.
package bench

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Relay answers a client's SSLRequest, terminates its TLS, opens TLS to the
// database (SSLRequest, then TLS with UpstreamTLS's client certificate) and
// copies bytes both ways.
type Relay struct {
	// ClientTLS is the relay's server side: its certificate.
	ClientTLS *tls.Config
	// Upstream is the database's host:port; UpstreamTLS its client side.
	Upstream    string
	UpstreamTLS *tls.Config
}

// Serve accepts connections until ctx is done.
func (r *Relay) Serve(ctx context.Context, ln net.Listener) error {
	return serveConns(ctx, ln, r.relay)
}

// serveConns accepts connections until ctx is done, handling each on its
// own goroutine, and returns once every handler has finished.
func serveConns(ctx context.Context, ln net.Listener, handle func(context.Context, net.Conn) error) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = handle(ctx, c)
		}()
	}
}

// pipe copies bytes both ways between the client's and the database's TLS
// connections until both directions are done.
func pipe(client, server *tls.Conn) {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(server, client)
		_ = server.CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(client, server)
	client.Close()
	<-done
}

const sslRequest = 80877103

func (r *Relay) relay(ctx context.Context, c net.Conn) error {
	var req [8]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint32(req[:4]) != 8 || binary.BigEndian.Uint32(req[4:]) != sslRequest {
		return errors.New("relay: the client did not ask for TLS")
	}
	if _, err := c.Write([]byte{'S'}); err != nil {
		return err
	}
	client := tls.Server(c, r.ClientTLS)
	if err := client.HandshakeContext(ctx); err != nil {
		return err
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", r.Upstream)
	if err != nil {
		return err
	}
	defer raw.Close()
	if _, err := raw.Write(req[:]); err != nil {
		return err
	}
	var ans [1]byte
	if _, err := io.ReadFull(raw, ans[:]); err != nil || ans[0] != 'S' {
		return fmt.Errorf("relay: the database refused TLS: %v %q", err, ans[0])
	}
	server := tls.Client(raw, r.UpstreamTLS)
	if err := server.HandshakeContext(ctx); err != nil {
		return err
	}
	pipe(client, server)
	return nil
}
