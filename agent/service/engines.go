package service

// The engines the agent serves: each registers itself with
// agent.RegisterEngine when imported, and Start builds those it finds.
import (
	_ "github.com/tollgate-db/tollgate/agent/mysql"
	_ "github.com/tollgate-db/tollgate/agent/postgres"
	_ "github.com/tollgate-db/tollgate/agent/redis"
	_ "github.com/tollgate-db/tollgate/agent/sqlserver"
)
