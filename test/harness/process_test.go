package harness

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func sh(t *testing.T, script string, stop time.Duration) *Process {
	t.Helper()
	p, err := StartProcess(Command{
		Name:        "sh",
		Path:        "/bin/sh",
		Args:        []string{"-c", script},
		Log:         filepath.Join(t.TempDir(), "out.log"),
		StopTimeout: stop,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

func TestProcessStopKillsWhatIgnoresTheSignal(t *testing.T) {
	// Both the shell and its child ignore SIGTERM.
	p := sh(t, `trap "" TERM; sleep 300 & echo started; wait`, 200*time.Millisecond)
	var kids []int
	if err := p.WaitReady(10*time.Second, func() error {
		if kids = descendants(p.Pid()); len(kids) == 0 {
			return errors.New("no child yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	err := p.Stop()
	if err == nil || !strings.Contains(err.Error(), "did not stop within 200ms") || !strings.Contains(err.Error(), "started") {
		t.Fatalf("Stop of a process ignoring SIGTERM: %v; want a timeout error with the log tail", err)
	}
	if ProcessAlive(p.Pid()) || ProcessGroupAlive(p.Pid()) {
		t.Fatalf("process group %d alive after Stop", p.Pid())
	}
	for _, k := range kids {
		if ProcessAlive(k) {
			t.Fatalf("child %d alive after Stop", k)
		}
	}
	if again := p.Stop(); again == nil || again.Error() != err.Error() {
		t.Fatalf("second Stop = %v, want the first result", again)
	}
}

func TestProcessStopKillsEscapedChildren(t *testing.T) {
	// A child that leaves the process group (PostgreSQL backends do) is
	// still found and stopped.
	p := sh(t, `setsid sleep 300 & wait`, 5*time.Second)
	var kids []int
	if err := p.WaitReady(10*time.Second, func() error {
		kids = descendants(p.Pid())
		for _, k := range kids {
			if pgid, _ := syscall.Getpgid(k); pgid == k {
				return nil
			}
		}
		return errors.New("no session leader child yet")
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, k := range kids {
		if ProcessAlive(k) {
			t.Fatalf("child %d (own process group) alive after Stop", k)
		}
	}
}

func TestProcessWaitReadyShowsLog(t *testing.T) {
	p := sh(t, `echo "fatal: cannot open the data directory" >&2; exit 3`, time.Second)
	err := p.WaitReady(10*time.Second, func() error { return errors.New("not listening") })
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "cannot open the data directory") {
		t.Fatalf("WaitReady on a process that exits: %v", err)
	}

	p = sh(t, `echo "still warming up"; exec sleep 300`, time.Second)
	err = p.WaitReady(100*time.Millisecond, func() error { return errors.New("not listening") })
	if err == nil || !strings.Contains(err.Error(), "not ready after 100ms: not listening") || !strings.Contains(err.Error(), "still warming up") {
		t.Fatalf("WaitReady timeout: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(p.Pid()) {
		t.Fatal("process alive after Stop")
	}
}

func TestMissingServerNamesThePackage(t *testing.T) {
	empty := t.TempDir()
	t.Setenv("PATH", empty)
	if _, err := findPostgresIn([]string{empty}); err == nil || !strings.Contains(err.Error(), "install postgresql-15") {
		t.Fatalf("missing PostgreSQL: %v", err)
	}
	if _, _, err := findMariaDB(empty, empty); err == nil || !strings.Contains(err.Error(), "install the Debian package mariadb-server") {
		t.Fatalf("missing MariaDB: %v", err)
	}
}

func TestFileTail(t *testing.T) {
	f := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(f, []byte("a\nb\nc\nd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int]string{1: "d", 2: "c\nd", 4: "a\nb\nc\nd", 10: "a\nb\nc\nd"} {
		if got, err := fileTail(f, n); err != nil || got != want {
			t.Errorf("fileTail(%d) = %q, %v; want %q", n, got, err, want)
		}
	}
}
