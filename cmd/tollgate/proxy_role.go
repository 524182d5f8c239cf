package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/tollgate-db/tollgate/agent/service"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/proxy"
)

// The proxy role of `tollgate start`: a proxy of its own, on a machine
// without the broker (broker.enabled false, proxy.enabled true). It joins
// the broker at proxy.broker_addr with a proxy token, holds agents'
// tunnels and routes database sessions as the broker's proxy does, keeps
// its leases in PRESENCE as the proxy part, and splices whatever it does
// not route (the API, the web UI, a database no proxy routes) whole to
// the broker's port.
func init() {
	addStartRole(startRole{
		Name:         "proxy",
		Enabled:      proxyOnly,
		SignalsReady: true,
		Run: func(ctx context.Context, d *startDeps) error {
			cfg := d.Config
			cert, hostCA, err := proxyCertificate(ctx, cfg)
			if err != nil {
				return err
			}
			_, js, err := d.As(natsserver.Proxy)
			if err != nil {
				return err
			}
			kv, err := presence.Open(ctx, js)
			if err != nil {
				return err
			}
			view, err := presence.Watch(ctx, kv)
			if err != nil {
				return err
			}
			raw, err := net.Listen("tcp", cfg.Proxy.Listen)
			if err != nil {
				return fmt.Errorf("proxy.listen: %w", err)
			}
			defer raw.Close()
			public := cfg.Proxy.PublicAddr
			if public == "" {
				public = raw.Addr().String()
			}
			agents := x509.NewCertPool()
			agents.AddCert(hostCA)
			broker := cfg.Proxy.BrokerAddr
			ann := presence.NewAnnouncer(kv, proxyID(), public, 0, d.Log.With("component", "presence"))
			names, err := proxyHostNames(cfg)
			if err != nil {
				return err
			}
			px, err := proxy.New(proxy.Options{Listener: raw, Cert: cert, AgentCAs: agents,
				Renew: func(ctx context.Context) (tls.Certificate, error) {
					return service.RenewProxy(ctx, broker, filepath.Join(cfg.DataDir, "proxy", "joined"), names)
				},
				Recorder: d.Publisher, Cluster: cfg.ClusterName, Log: d.Log.With("component", "proxy"),
				Presence: ann, View: view,
				Upstream: func(ctx context.Context) (net.Conn, error) {
					return (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(ctx, "tcp", broker)
				}})
			if err != nil {
				return err
			}
			d.Log.Info("proxy listening", "addr", raw.Addr().String(), "public_addr", public, "broker", broker)
			d.Ready("proxy")
			return px.Serve(ctx)
		},
	})
}

// proxyOnly says whether the configuration runs a proxy without the
// broker beside it.
func proxyOnly(c *config.Config) bool {
	return !brokerEnabled(c) && c.Proxy.Enabled != nil && *c.Proxy.Enabled
}

// eventsViaBroker says whether a proxy without the broker reaches the
// event plane through the broker's port (no nats.urls, no leaf node): a
// proxy needs no way out but that one port.
func eventsViaBroker(c *config.Config) bool {
	return proxyOnly(c) && len(c.NATS.URLs) == 0 && c.NATS.Leaf == nil
}

// proxyCertificate is the proxy's host certificate (host id
// ca.ProxyHostID) and the host CA, joining the broker the first time;
// kept in <data_dir>/proxy/joined.
func proxyCertificate(ctx context.Context, cfg *config.Config) (tls.Certificate, *x509.Certificate, error) {
	names, err := proxyHostNames(cfg)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return service.JoinProxy(ctx, cfg.Proxy.BrokerAddr, cfg.Proxy.JoinToken, cfg.Proxy.BrokerCAPin,
		filepath.Join(cfg.DataDir, "proxy", "joined"), names)
}

// proxyHostNames are the names the proxy's certificate is for: the host
// of proxy.public_addr, else the machine's name.
func proxyHostNames(cfg *config.Config) ([]string, error) {
	host, _, err := net.SplitHostPort(cfg.Proxy.PublicAddr)
	if err != nil {
		return nil, fmt.Errorf("proxy.public_addr: %w", err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		// Agents and other proxies dial it by name: the machine's.
		if host, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("proxy.public_addr names no host, and the machine's name is unknown: %w", err)
		}
	}
	return []string{host}, nil
}
