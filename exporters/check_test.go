package exporters_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/exporters"
	_ "github.com/tollgate-db/tollgate/exporters/file"
)

// Check decodes every part of an exporter's configuration, the sink's own
// keys too, and builds nothing: the file sink's file is not made.
func TestCheckBuildsNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	exp := func(settings string) config.Exporter {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(settings), &n); err != nil {
			t.Fatal(err)
		}
		return config.Exporter{Name: "f", Type: "file", Settings: n}
	}
	if err := exporters.Check(0, exp("{path: "+path+", batch_size: 10, max_files: 3}")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("Check made the sink's file: %v", err)
	}
	for settings, want := range map[string]string{
		"{path: " + path + ", pth: x}":       `unknown key "exporters[0] (f).settings.pth"`,
		"{path: " + path + ", max_files: x}": "max_files",
		"{batch_size: -1}":                   "batch_size",
	} {
		if err := exporters.Check(0, exp(settings)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error with %q", settings, err, want)
		}
	}
}
