package natsserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ProxyALPN is the TLS application protocol of an agent reaching the
// event plane through a proxy's public port: the proxy terminates that TLS
// (the agent's host certificate) and relays the NATS protocol to the
// embedded server as the agent part.
const ProxyALPN = "tollgate-events/1"

// InProcessConn is a connection to the server within the process, for a
// relay that speaks the NATS protocol on a client's behalf.
func (s *Server) InProcessConn() (net.Conn, error) { return s.srv.InProcessConn() }

// Sign signs nonce with part p's nkey, as its CONNECT must: the public key
// and the signature. A relay signs for the clients it vouches for.
func (s *Server) Sign(p Part, nonce []byte) (string, []byte, error) {
	if s.opts.Auth == nil {
		return "", nil, errors.New("natsserver: the server has no identities to sign with")
	}
	kp := s.opts.Auth.keys[p]
	if kp == nil {
		return "", nil, fmt.Errorf("natsserver: no %s credentials", p)
	}
	sig, err := kp.Sign(nonce)
	if err != nil {
		return "", nil, err
	}
	pub, err := kp.PublicKey()
	return pub, sig, err
}

// ConnectViaProxy connects as the agent part through the proxies at
// addrs (any one, another when it fails): TLS with ALPN ProxyALPN and the
// agent's host certificate (tc) over a connection dial opens (nil: a
// direct one), after which the proxy speaks for the agent to the embedded
// server. Servers the cluster announces are ignored: the proxies are the
// only way in.
func ConnectViaProxy(addrs []string, tc *tls.Config, dial func(ctx context.Context, network, addr string) (net.Conn, error), extra ...nats.Option) (*nats.Conn, error) {
	if len(addrs) == 0 {
		return nil, errors.New("natsserver: no proxy address")
	}
	urls := make([]string, len(addrs))
	for i, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("natsserver: proxy address %q: %w", a, err)
		}
		urls[i] = "nats://" + a
	}
	tc = tc.Clone()
	tc.NextProtos = []string{ProxyALPN}
	opts := append([]nats.Option{
		nats.Name("tollgate-agent"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.IgnoreDiscoveredServers(),
		nats.CustomInboxPrefix(Agent.InboxPrefix()),
		nats.SetCustomDialer(proxyDialer{tls: tc, dial: dial}),
	}, extra...)
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("natsserver: the event plane through the proxies %v: %w", addrs, err)
	}
	return nc, nil
}

// proxyDialer opens the TLS connection to a proxy for the NATS client,
// which then speaks plain NATS inside it.
type proxyDialer struct {
	tls  *tls.Config
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (d proxyDialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc := d.tls
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		tc = tc.Clone()
		tc.ServerName = host
	}
	dial := d.dial
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	raw, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, tc)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != ProxyALPN {
		c.Close()
		return nil, fmt.Errorf("%s does not relay the event plane (ALPN %q)", addr, p)
	}
	return c, nil
}
