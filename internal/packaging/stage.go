// Package packaging builds Tollgate's Linux packages (deb, rpm, with
// goreleaser/nfpm) and its OCI image (with go-containerregistry) from the
// module's source, in Go and without system packaging tools or a
// container daemon. Stage builds the static binaries and gathers every
// file once; Package and Image lay them out for each format.
package packaging

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/tollgate-db/tollgate/deploy"
)

// Build says what to build: the module's folder, the target architecture
// (GOARCH) and the stamps `tollgate version` reports.
type Build struct {
	ModuleDir string
	Arch      string
	Version   string
	Commit    string
	Date      string
}

// Staged is a build laid out in a folder: the binaries, their shell
// completions and the files of deploy/.
type Staged struct {
	Build
	Dir string
}

// Binaries are the commands every package and the image carry.
var Binaries = []string{"tollgate", "tg"}

// Shells whose completions the packages carry.
var Shells = []string{"bash", "zsh", "fish"}

const buildinfoPkg = "github.com/tollgate-db/tollgate/internal/buildinfo"

// Stage builds b into dir (made if missing).
func Stage(ctx context.Context, b Build, dir string) (*Staged, error) {
	if b.Arch == "" {
		b.Arch = runtime.GOARCH
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	// Completions come from running the binaries, so they must run here.
	if b.Arch != runtime.GOARCH {
		return nil, fmt.Errorf("packaging: cannot build for %s on %s: the shell completions are made by running the binaries", b.Arch, runtime.GOARCH)
	}
	s := &Staged{Build: b, Dir: dir}
	if err := os.MkdirAll(s.path("bin"), 0o755); err != nil {
		return nil, err
	}
	// Static, like `make build` stamped, without the builder's paths: a
	// package installs on any Linux of the architecture, the image has no
	// libc.
	ldflags := fmt.Sprintf("-s -w -X %[1]s.Version=%[2]s -X %[1]s.Commit=%[3]s -X %[1]s.Date=%[4]s",
		buildinfoPkg, b.Version, b.Commit, b.Date)
	args := []string{"build", "-trimpath", "-ldflags", ldflags, "-o", s.path("bin") + "/"}
	for _, n := range Binaries {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = b.ModuleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+b.Arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("packaging: go build: %v\n%s", err, out)
	}
	for _, n := range Binaries {
		for _, sh := range Shells {
			var out, errb bytes.Buffer
			c := exec.CommandContext(ctx, s.Binary(n), "completion", sh)
			c.Stdout, c.Stderr = &out, &errb
			if err := c.Run(); err != nil {
				return nil, fmt.Errorf("packaging: %s completion %s: %v: %s", n, sh, err, errb.Bytes())
			}
			if err := writeFile(s.Completion(n, sh), out.Bytes(), 0o644); err != nil {
				return nil, err
			}
		}
	}
	err := fs.WalkDir(deploy.Files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := deploy.Files.ReadFile(p)
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if strings.HasSuffix(p, ".sh") {
			mode = 0o755
		}
		return writeFile(s.path("deploy", p), data, mode)
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Binary is the path of the staged command name.
func (s *Staged) Binary(name string) string { return s.path("bin", name) }

// Completion is the path of name's completion script for shell.
func (s *Staged) Completion(name, shell string) string {
	return s.path("completions", shell, name)
}

// Deploy is the path of a file of deploy/ (e.g. "systemd/tollgate.service").
func (s *Staged) Deploy(p string) string { return s.path("deploy", p) }

func (s *Staged) path(elem ...string) string {
	return filepath.Join(append([]string{s.Dir}, elem...)...)
}

func writeFile(p string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	// WriteFile leaves the mode of a file that existed, and the umask
	// trims a new one's.
	return os.Chmod(p, mode)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
