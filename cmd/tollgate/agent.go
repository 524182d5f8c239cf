package main

import (
	"context"

	"github.com/tollgate-db/tollgate/agent/service"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// The agent role of `tollgate start`: the databases of db_service, served
// on db_service.listen and registered in STATE with heartbeats.
func init() {
	addStartRole(startRole{
		Name:    "agent",
		Enabled: service.Enabled,
		Run: func(ctx context.Context, d *startDeps) error {
			_, js, err := d.As(natsserver.Agent)
			if err != nil {
				return err
			}
			s, err := service.Start(ctx, service.Options{Config: d.Config, JS: js, Recorder: d.Publisher,
				Log: d.Log.With("component", "agent")})
			if err != nil {
				return err
			}
			return s.Wait()
		},
	})
}
