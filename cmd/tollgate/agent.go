package main

import (
	"context"

	"github.com/tollgate-db/tollgate/agent/service"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// The agent role of `tollgate start`: the databases of db_service, served
// on db_service.listen and registered in STATE with heartbeats.
func init() {
	addStartRole(startRole{
		Name:         "agent",
		Enabled:      service.Enabled,
		SignalsReady: true,
		Run: func(ctx context.Context, d *startDeps) error {
			_, js, err := d.As(natsserver.Agent)
			if err != nil {
				return err
			}
			o := service.Options{Config: d.Config, JS: js, Recorder: d.Publisher, Log: d.Log.With("component", "agent")}
			// The agent's own identity only reads STATE: beside the broker,
			// its databases are registered through the broker's store.
			if brokerEnabled(d.Config) && d.perPart() {
				store, err := d.BrokerStore(ctx)
				if err != nil {
					return err
				}
				o.Register = func(ctx context.Context, nd state.NewDatabase) error {
					_, err := store.RegisterDatabase(ctx, state.Actor{User: "host:" + nd.HostID}, nd)
					return err
				}
			}
			s, err := service.Start(ctx, o)
			if err != nil {
				return err
			}
			d.Ready("agent")
			return s.Wait()
		},
	})
}
