package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/proxy"
	"github.com/tollgate-db/tollgate/sessions"
)

// The broker role of `tollgate start`: state, CAs, authentication and the
// HTTPS API on proxy.listen, behind the proxy (agent tunnels and database
// sessions through them on the same port) unless proxy.enabled is false.
func init() {
	addStartRole(startRole{
		Name:         "broker",
		Enabled:      brokerEnabled,
		SignalsReady: true,
		Run: func(ctx context.Context, d *startDeps) error {
			_, js, err := d.As(natsserver.Broker)
			if err != nil {
				return err
			}
			o := daemon.Options{Config: d.Config, JS: js, Audit: d.Publisher, Log: d.Log}
			// The proxy owns the public port and hands the API what is
			// neither a tunnel nor a database session.
			var raw net.Listener
			if proxyEnabled(d.Config) {
				if raw, err = net.Listen("tcp", d.Config.Proxy.Listen); err != nil {
					return fmt.Errorf("proxy.listen: %w", err)
				}
				defer raw.Close()
				o.Listener = proxy.NewHandoff(raw.Addr())
			}
			b, err := daemon.Start(ctx, o)
			if err != nil {
				d.setBrokerStore(nil, fmt.Errorf("the broker did not start: %w", err))
				if ctx.Err() != nil {
					return nil // shut down while still starting
				}
				return err
			}
			d.setBrokerStore(b.Store, nil)
			proxyDone := make(chan error, 1)
			if raw != nil {
				agents, err := b.CAs.Pool(ca.Host)
				if err != nil {
					return err
				}
				// The proxy announces itself and its tunnels in PRESENCE:
				// agents find every proxy there, other proxies route
				// through it, db ls says online.
				ann := presence.NewAnnouncer(b.PresenceKV, proxyID(), b.ProxyAddr, 0, d.Log.With("component", "presence"))
				// Its own certificate is renewed from the CA in this
				// process, for the names of the first.
				leaf := b.HostCert.Leaf
				names := append([]string(nil), leaf.DNSNames...)
				for _, ip := range leaf.IPAddresses {
					names = append(names, ip.String())
				}
				px, err := proxy.New(proxy.Options{Listener: raw, Handoff: o.Listener.(*proxy.Handoff), Cert: b.HostCert, AgentCAs: agents, GetCertificate: b.ProxyNames,
					Renew: func(context.Context) (tls.Certificate, error) {
						return daemon.HostCertificate(b.CAs, ca.ProxyHostID, names)
					},
					Registered: func(name string) (string, bool) { d, ok := b.Store.Database(name); return d.HostID, ok },
					Recorder:   d.Publisher, Cluster: d.Config.ClusterName, Log: d.Log.With("component", "proxy"),
					Presence: ann, View: b.Presence, Events: eventPlane(d)})
				if err != nil {
					return err
				}
				go func() { proxyDone <- px.Serve(ctx) }()
			}
			// The session index lets `sessions ls` and replay read a few
			// entries rather than the AUDIT stream; without it they still
			// work, scanning the stream.
			ix, err := sessions.StartIndex(ctx, js, sessions.IndexOptions{Replicas: d.Config.NATS.Replicas,
				MaxAge: d.Config.NATS.AuditMaxAge.Std(), Log: d.Log.With("component", "sessions-index")})
			if err != nil {
				d.Log.Error("sessions index not started: sessions ls and replay scan the AUDIT stream", "err", err)
			} else {
				defer ix.Stop()
			}
			pin, _ := b.Admin.HostCAPin()
			d.Log.Info("broker API listening", "addr", b.Addr, "public_addr", b.ProxyAddr, "host_ca", pin, "proxy", raw != nil)
			d.Ready("broker")
			// The proxy failing takes the API with it: the process ends.
			brokerDone := make(chan error, 1)
			go func() { brokerDone <- b.Wait() }()
			select {
			case err := <-brokerDone:
				return err
			case err := <-proxyDone:
				if err != nil {
					return fmt.Errorf("proxy: %w", err)
				}
				return <-brokerDone
			}
		},
	})
}

// eventPlane relays agents' and proxies' NATS connections through the
// proxy to the embedded server, signed as the agent or the proxy part;
// nil with an external cluster, which they reach themselves (nats.urls).
func eventPlane(d *startDeps) *proxy.EventPlane {
	if d.NATS == nil {
		return nil
	}
	return &proxy.EventPlane{Dial: d.NATS.InProcessConn, Sign: d.NATS.Sign}
}

// proxyID names this proxy in PRESENCE: the machine and a random part,
// new at every start, so that two proxies on one machine, or a proxy
// and its restarted self, are never taken for one another.
func proxyID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "proxy"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// brokerEnabled says whether the configuration runs the broker (the
// default): the agent beside it then registers through its store.
func brokerEnabled(c *config.Config) bool { return c.Broker.Enabled == nil || *c.Broker.Enabled }

// proxyEnabled says whether the broker's port is served by the proxy: the
// default wherever the broker runs.
func proxyEnabled(c *config.Config) bool { return c.Proxy.Enabled == nil || *c.Proxy.Enabled }
