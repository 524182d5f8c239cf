package mysql

import (
	"context"
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/protocol"
)

func TestSettings(t *testing.T) {
	db := func(src string) config.Database { return agenttest.ParseDatabase(t, protocol.MySQL, src) }
	p := agent.EngineParams{Config: &config.Config{}, Databases: []config.Database{db("name: old\nsettings: {server_version: 5.7.44-log}"), db("name: plain")}}
	e, err := agent.NewEngine(context.Background(), protocol.MySQL, p)
	if err != nil {
		t.Fatal(err)
	}
	my := e.(*Engine)
	if v := my.versionFor(&agent.Database{Config: p.Databases[0]}); v != "5.7.44-log" {
		t.Errorf("greeting version of old: %q", v)
	}
	if v := my.versionFor(&agent.Database{Config: p.Databases[1]}); v != DefaultServerVersion {
		t.Errorf("greeting version of plain: %q", v)
	}
	p.Databases = []config.Database{db("name: typo\nsettings: {server_verion: '8.0'}")}
	if _, err := agent.NewEngine(context.Background(), protocol.MySQL, p); err == nil || !strings.Contains(err.Error(), "server_verion") {
		t.Errorf("unknown setting: %v", err)
	}
}
