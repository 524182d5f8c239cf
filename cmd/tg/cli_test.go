package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/broker/api"
)

// cliBinaries builds tg and tollgate with a version stamped as the Makefile does.
func cliBinaries(t *testing.T) (tg, tollgate string) {
	t.Helper()
	dir := t.TempDir()
	ld := "-X github.com/tollgate-db/tollgate/internal/buildinfo.Version=v9.8.7 " +
		"-X github.com/tollgate-db/tollgate/internal/buildinfo.Commit=c0ffee " +
		"-X github.com/tollgate-db/tollgate/internal/buildinfo.Date=2026-01-02T03:04:05Z"
	if out, err := exec.Command("go", "build", "-ldflags", ld, "-o", dir+"/", ".", "../tollgate").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "tg"), filepath.Join(dir, "tollgate")
}

// runCLI runs bin and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return stdout.String(), stderr.String(), code
}

func TestCLIVersionAndUnknownCommands(t *testing.T) {
	tg, tollgate := cliBinaries(t)
	for _, bin := range []string{tg, tollgate} {
		name := filepath.Base(bin)
		for _, args := range [][]string{{"version"}, {"--version"}} {
			out, errOut, code := runCLI(t, bin, args...)
			if code != 0 {
				t.Fatalf("%s %v: exit %d: %s", name, args, code, errOut)
			}
			for _, want := range []string{name + " v9.8.7", "c0ffee", "2026-01-02T03:04:05Z", "go1."} {
				if !strings.Contains(out, want) {
					t.Errorf("%s %v: %q lacks %q", name, args, out, want)
				}
			}
		}
		out, _, _ := runCLI(t, bin, "version", "--format=json")
		var info map[string]string
		if err := json.Unmarshal([]byte(out), &info); err != nil || info["version"] != "v9.8.7" || info["commit"] != "c0ffee" {
			t.Errorf("%s version --format=json: %q (%v)", name, out, err)
		}
	}
}

func TestCLIUnknownSubcommands(t *testing.T) {
	tg, tollgate := cliBinaries(t)
	for _, c := range []struct {
		bin     string
		args    []string
		suggest string
	}{
		{tg, []string{"db", "lss"}, "ls"},
		{tg, []string{"requst"}, "request"},
		{tg, []string{"request", "lss"}, "ls"},
		{tg, []string{"proxy", "dbb"}, "db"},
		{tollgate, []string{"lockz"}, "locks"},
		{tollgate, []string{"audit", "tial"}, "tail"},
		{tollgate, []string{"locks", "ad"}, "add"},
		{tollgate, []string{"completion", "bsh"}, "bash"},
	} {
		out, errOut, code := runCLI(t, c.bin, c.args...)
		what := filepath.Base(c.bin) + " " + strings.Join(c.args, " ")
		if code == 0 {
			t.Errorf("%s: exit 0, want an error (stdout %q)", what, out)
		}
		if !strings.Contains(errOut, "unknown command") || !strings.Contains(errOut, "Did you mean this?\n\t"+c.suggest+"\n") {
			t.Errorf("%s: stderr %q lacks the suggestion %q", what, errOut, c.suggest)
		}
	}
	// A group alone still prints its help and succeeds.
	if out, errOut, code := runCLI(t, tg, "db"); code != 0 || !strings.Contains(out, "Available Commands") {
		t.Errorf("tg db: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestEmptyDatabasesText(t *testing.T) {
	for why, want := range map[string]string{
		api.EmptyNoneRegistered: "No databases are registered",
		api.EmptyNoneAllowed:    "none that your roles (dev, ops) allow",
		api.EmptyNoneLive:       "offline",
		"":                      "No databases your roles allow",
	} {
		if got := emptyDatabasesText(why, []string{"dev", "ops"}); !strings.Contains(got, want) {
			t.Errorf("%q: %q lacks %q", why, got, want)
		}
	}
}
