package redis

import (
	"context"
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/protocol"
)

func TestRegistered(t *testing.T) {
	db := func(src string) config.Database { return agenttest.ParseDatabase(t, protocol.Redis, src) }
	if protocol.EngineOf(protocol.Redis) != protocol.Redis {
		t.Fatalf("protocol redis is served by %q", protocol.EngineOf(protocol.Redis))
	}
	p := agent.EngineParams{Config: &config.Config{}, Databases: []config.Database{db("name: cache")}}
	e, err := agent.NewEngine(context.Background(), protocol.Redis, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e.(*Engine); !ok {
		t.Fatalf("engine %T", e)
	}
	p.Databases = []config.Database{db("name: cache\nsettings: {max_arg: 10}")}
	if _, err := agent.NewEngine(context.Background(), protocol.Redis, p); err == nil || !strings.Contains(err.Error(), "the redis engine takes no settings") {
		t.Errorf("settings given: %v", err)
	}
}
