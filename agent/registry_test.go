package agent

import (
	"context"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-db/tollgate/config"
)

func settingsDB(t *testing.T, name, src string) config.Database {
	t.Helper()
	d := config.Database{Name: name}
	if src != "" {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatal(err)
		}
		d.Settings = *doc.Content[0]
	}
	return d
}

func TestEngineRegistry(t *testing.T) {
	type knobs struct {
		Depth int `yaml:"depth"`
	}
	var got []int
	RegisterEngine("test-decoding", EngineRegistration{New: func(_ context.Context, p *EngineParams) (Engine, error) {
		for _, d := range p.Databases {
			var k knobs
			if err := p.Decode(d, &k); err != nil {
				return nil, err
			}
			got = append(got, k.Depth)
		}
		return &echoEngine{}, nil
	}})
	RegisterEngine("test-plain", EngineRegistration{New: func(context.Context, *EngineParams) (Engine, error) {
		return &echoEngine{}, nil
	}})
	defer func() {
		enginesMu.Lock()
		delete(engines, "test-decoding")
		delete(engines, "test-plain")
		enginesMu.Unlock()
	}()

	ctx := context.Background()
	if _, err := NewEngine(ctx, "test-decoding", EngineParams{Databases: []config.Database{
		settingsDB(t, "a", "depth: 3"), settingsDB(t, "b", ""), settingsDB(t, "c", "{}")}}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != 3 || got[1] != 0 || got[2] != 0 {
		t.Errorf("decoded %v", got)
	}
	// Settings are decoded strictly: an unknown key is named.
	_, err := NewEngine(ctx, "test-decoding", EngineParams{Databases: []config.Database{settingsDB(t, "a", "dept: 3")}})
	if err == nil || !strings.Contains(err.Error(), "dept") {
		t.Errorf("unknown key: %v", err)
	}
	// An engine that decodes nothing takes no settings, but empty ones.
	if _, err := NewEngine(ctx, "test-plain", EngineParams{Databases: []config.Database{
		settingsDB(t, "a", ""), settingsDB(t, "b", "{}"), settingsDB(t, "c", "null")}}); err != nil {
		t.Errorf("empty settings: %v", err)
	}
	_, err = NewEngine(ctx, "test-plain", EngineParams{Databases: []config.Database{settingsDB(t, "a", "depth: 3")}})
	if err == nil || !strings.Contains(err.Error(), "takes no settings") {
		t.Errorf("settings given to an engine without any: %v", err)
	}
	if _, err := NewEngine(ctx, "test-missing", EngineParams{}); err == nil {
		t.Error("an engine not registered was built")
	}
	defer func() {
		if recover() == nil {
			t.Error("a second registration under one name did not panic")
		}
	}()
	RegisterEngine("test-plain", EngineRegistration{New: func(context.Context, *EngineParams) (Engine, error) { return nil, nil }})
}
