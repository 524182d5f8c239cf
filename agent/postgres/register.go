package postgres

import (
	"context"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/protocol"
)

// The agent builds the engine of every protocol whose Engine is postgres
// (PostgreSQL and CockroachDB) from this registration: one engine for all
// of them, so that it holds the cancel keys of every session.
func init() {
	agent.RegisterEngine(protocol.Postgres, agent.EngineRegistration{New: func(_ context.Context, p *agent.EngineParams) (agent.Engine, error) {
		return New(Options{Password: p.Password, Logger: p.Log}), nil
	}})
}
