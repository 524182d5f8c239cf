package redis

import (
	"context"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/protocol"
)

// The agent builds the Redis engine from this registration. It takes no
// per-database settings: an agent refuses to start with any given.
func init() {
	agent.RegisterEngine(protocol.Redis, agent.EngineRegistration{New: func(_ context.Context, p *agent.EngineParams) (agent.Engine, error) {
		return New(Options{Logger: p.Log}), nil
	}})
}
