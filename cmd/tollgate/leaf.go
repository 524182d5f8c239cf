package main

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// The leaf role of `tollgate start`, on when nats.leaf is set: the
// embedded server is then a leaf node of the hub with a JetStream domain
// of its own (natsserver.Leaf), and this role keeps the hub's AUDIT stream
// sourcing this leaf's through the link.
func init() {
	addStartRole(startRole{
		Name:    "leaf",
		Enabled: func(c *config.Config) bool { return c.NATS.Leaf != nil },
		Run: func(ctx context.Context, d *startDeps) error {
			l := d.Config.NATS.Leaf
			if l == nil {
				<-ctx.Done()
				return nil
			}
			nc, _, err := d.As(natsserver.Broker)
			if err != nil {
				return err
			}
			hub, err := jetstream.NewWithDomain(nc, l.HubDomain)
			if err != nil {
				return err
			}
			d.Log.Info("leaf node of the hub", "hub_urls", l.HubURLs, "domain", l.Domain, "hub_domain", l.HubDomain)
			events.KeepLeafSourced(ctx, hub, l.Domain, d.Log.With("component", "leaf"), 2*time.Second, 30*time.Second)
			return nil
		},
	})
}
