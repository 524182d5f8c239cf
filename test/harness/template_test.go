package harness

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDataTemplateRebuildsWhenDamaged(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	builds := 0
	build := func(dir string) error {
		builds++
		if err := os.MkdirAll(filepath.Join(dir, "base"), 0o700); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "base", "file"), []byte("data"), 0o600)
	}
	dir, err := dataTemplate("/bin/sh", []string{"k"}, build)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := dataTemplate("/bin/sh", []string{"k"}, build); err != nil || again != dir || builds != 1 {
		t.Fatalf("second use: %q, %v after %d builds; want %q from one build", again, err, builds, dir)
	}
	if other, err := dataTemplate("/bin/sh", []string{"other"}, build); err != nil || other == dir {
		t.Fatalf("another key gave %q, %v", other, err)
	}

	// A cleaner removed a file: the template is built again.
	if err := os.Remove(filepath.Join(dir, "base", "file")); err != nil {
		t.Fatal(err)
	}
	builds = 0
	if _, err := dataTemplate("/bin/sh", []string{"k"}, build); err != nil || builds != 1 {
		t.Fatalf("damaged template: %v after %d builds, want one rebuild", err, builds)
	}

	dst := filepath.Join(t.TempDir(), "copy")
	if err := copyTree(dir, dst, nil); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(dst, "base", "file")); err != nil || string(data) != "data" {
		t.Fatalf("copied file: %q, %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(dst, manifestName)); !os.IsNotExist(err) {
		t.Fatalf("the manifest was copied into a data directory: %v", err)
	}
}
