package mysql

import (
	"context"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/protocol"
)

func TestSettings(t *testing.T) {
	db := func(name, settings string) config.Database {
		d := config.Database{Name: name, Protocol: protocol.MySQL}
		if settings != "" {
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte(settings), &doc); err != nil {
				t.Fatal(err)
			}
			d.Settings = *doc.Content[0]
		}
		return d
	}
	p := agent.EngineParams{Config: &config.Config{}, Databases: []config.Database{db("old", "server_version: 5.7.44-log"), db("plain", "")}}
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
	p.Databases = []config.Database{db("typo", "server_verion: 8.0")}
	if _, err := agent.NewEngine(context.Background(), protocol.MySQL, p); err == nil || !strings.Contains(err.Error(), "server_verion") {
		t.Errorf("unknown setting: %v", err)
	}
}
