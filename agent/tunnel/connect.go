package tunnel

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// EgressProxy returns the HTTP proxy the environment names for a tunnel
// to addr (HTTPS_PROXY, excepted by NO_PROXY, as for any HTTPS request),
// or nil. It reads the environment at each call, unlike
// http.ProxyFromEnvironment, which reads it once per process.
func EgressProxy(addr string) (*url.URL, error) {
	return httpproxy.FromEnvironment().ProxyFunc()(&url.URL{Scheme: "https", Host: addr})
}

// DialVia opens a TCP connection to addr through the HTTP proxy at px
// with CONNECT, for agents whose only way out is an egress proxy. The
// proxy sees the address of the Tollgate proxy and then TLS.
func DialVia(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), px *url.URL, addr string) (net.Conn, error) {
	if px.Scheme != "http" {
		// TLS to the egress proxy itself is not supported; the tunnel
		// inside is TLS either way.
		return nil, fmt.Errorf("tunnel: egress proxy %s: only http:// proxies are supported", px.Redacted())
	}
	host := px.Host
	if px.Port() == "" {
		host = net.JoinHostPort(px.Hostname(), "80")
	}
	c, err := dial(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("tunnel: egress proxy %s: %w", px.Redacted(), err)
	}
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	} else {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if u := px.User; u != nil {
		pw, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)))
	}
	if err := req.Write(c); err != nil {
		c.Close()
		return nil, fmt.Errorf("tunnel: egress proxy %s: %w", px.Redacted(), err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("tunnel: egress proxy %s: %w", px.Redacted(), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("tunnel: egress proxy %s refused CONNECT %s: %s", px.Redacted(), addr, resp.Status)
	}
	_ = c.SetDeadline(time.Time{})
	// Nothing should follow the answer before the ClientHello is sent;
	// whatever did is read first all the same.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		return &bufferedConn{Conn: c, pending: append([]byte(nil), b...)}, nil
	}
	return c, nil
}

// bufferedConn reads bytes already taken from the connection first.
type bufferedConn struct {
	net.Conn
	pending []byte
}

func (b *bufferedConn) Read(p []byte) (int, error) {
	if len(b.pending) > 0 {
		n := copy(p, b.pending)
		b.pending = b.pending[n:]
		return n, nil
	}
	return b.Conn.Read(p)
}
