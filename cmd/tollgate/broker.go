package main

import (
	"context"
	"fmt"

	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/sessions"
)

// The broker role of `tollgate start`: state, CAs, authentication and the
// HTTPS API on proxy.listen.
func init() {
	addStartRole(startRole{
		Name:    "broker",
		Enabled: brokerEnabled,
		Run: func(ctx context.Context, d *startDeps) error {
			_, js, err := d.As(natsserver.Broker)
			if err != nil {
				return err
			}
			b, err := daemon.Start(ctx, daemon.Options{Config: d.Config, JS: js, Audit: d.Publisher, Log: d.Log})
			if err != nil {
				d.setBrokerStore(nil, fmt.Errorf("the broker did not start: %w", err))
				if ctx.Err() != nil {
					return nil // shut down while still starting
				}
				return err
			}
			d.setBrokerStore(b.Store, nil)
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
			d.Log.Info("broker API listening", "addr", b.Addr, "public_addr", b.ProxyAddr, "host_ca", pin)
			return b.Wait()
		},
	})
}

// brokerEnabled says whether the configuration runs the broker (the
// default): the agent beside it then registers through its store.
func brokerEnabled(c *config.Config) bool { return c.Broker.Enabled == nil || *c.Broker.Enabled }
