package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Command describes a server process for StartProcess.
type Command struct {
	// Name is the short name used in errors, e.g. "postgres".
	Name string
	Path string
	Args []string
	Dir  string
	// Env is the whole environment of the process; nil keeps the test's.
	Env []string
	// Log receives the process's stdout and stderr (appended).
	Log string
	// ExtraLogs are other files the server writes (its own log file); their
	// tails are shown with Log's in errors.
	ExtraLogs []string
	// User runs the process as another system user; only root can do that.
	User *SystemUser
	// StopSignal asks the server to shut down; SIGTERM when zero.
	StopSignal syscall.Signal
	// StopTimeout is how long Stop waits before it kills the process group;
	// 15 s when zero.
	StopTimeout time.Duration
	// DeathSignal reaches the server if the test binary dies without
	// running its cleanups, so nothing is left behind; SIGKILL when zero.
	DeathSignal syscall.Signal
}

// SystemUser is a local account a server runs as.
type SystemUser struct {
	Name     string
	UID, GID uint32
}

// Process is a started server: the leader of its own process group, so a
// failed shutdown can kill it together with whatever it spawned.
type Process struct {
	cmd  Command
	exec *exec.Cmd
	done chan struct{}
	err  error // Wait's result, set before done is closed

	stopOnce sync.Once
	stopErr  error
}

// StartProcess starts c in a new process group with its output appended to
// c.Log. It does not wait for the server to be ready: see WaitReady.
func StartProcess(c Command) (*Process, error) {
	if c.Name == "" {
		c.Name = filepath.Base(c.Path)
	}
	if c.StopSignal == 0 {
		c.StopSignal = syscall.SIGTERM
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 15 * time.Second
	}
	if c.Log == "" {
		return nil, fmt.Errorf("harness: %s: no log file given", c.Name)
	}
	out, err := os.OpenFile(c.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("harness: %s: open log: %w", c.Name, err)
	}
	defer out.Close()
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Dir = c.Dir
	cmd.Env = c.Env
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr(c.User)
	cmd.SysProcAttr.Pdeathsig = c.DeathSignal
	if c.DeathSignal == 0 {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	becomeSubreaper()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("harness: start %s: %w", c.Name, err)
	}
	p := &Process{cmd: c, exec: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func sysProcAttr(u *SystemUser) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if u != nil {
		a.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID}
	}
	return a
}

// Pid is the process id, also its process group id.
func (p *Process) Pid() int { return p.exec.Process.Pid }

// Done is closed when the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// WaitReady calls ready every 25 ms until it returns nil. It fails early if
// the process exits, and after timeout; both errors carry the log tail.
func (p *Process) WaitReady(timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = ready(); last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("harness: %s exited before it was ready (%v); last check: %v\n%s",
				p.cmd.Name, p.err, last, p.LogTail(40))
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("harness: %s not ready after %s: %v\n%s", p.cmd.Name, timeout, last, p.LogTail(40))
		}
	}
}

// LogTail returns the last lines of the process's output and of its other
// log files, each under a header naming the file.
func (p *Process) LogTail(lines int) string {
	var b strings.Builder
	for _, f := range append([]string{p.cmd.Log}, p.cmd.ExtraLogs...) {
		tail, err := fileTail(f, lines)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			tail = err.Error()
		}
		fmt.Fprintf(&b, "--- last lines of %s ---\n%s", f, tail)
		if !strings.HasSuffix(tail, "\n") {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func fileTail(path string, lines int) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	data = bytes.TrimRight(data, "\n")
	for i, n := len(data)-1, 0; i >= 0; i-- {
		if data[i] == '\n' {
			if n++; n == lines {
				return string(data[i+1:]), nil
			}
		}
	}
	return string(data), nil
}

// Stop asks the server to shut down with the stop signal and waits. If it
// has not exited after the stop timeout, its process group is killed. Any
// process it spawned that is still alive afterwards (PostgreSQL backends
// lead their own sessions, outside the group) is killed too, so Stop
// returns with nothing left running. Calling Stop again returns the first
// result.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Process) stop() error {
	pid := p.Pid()
	children := descendants(pid)
	var err error
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(pid, p.cmd.StopSignal)
		select {
		case <-p.done:
		case <-time.After(p.cmd.StopTimeout):
			err = fmt.Errorf("harness: %s did not stop within %s after %v; killed its process group\n%s",
				p.cmd.Name, p.cmd.StopTimeout, p.cmd.StopSignal, p.LogTail(20))
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-p.done
		}
	}
	// The group may hold helpers that outlived the leader.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for _, c := range append(children, descendants(pid)...) {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range children {
		for reap(c); ProcessAlive(c); reap(c) {
			if time.Now().After(deadline) {
				return errors.Join(err, fmt.Errorf("harness: %s child %d still alive after SIGKILL", p.cmd.Name, c))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for ProcessGroupAlive(pid) {
		if time.Now().After(deadline) {
			return errors.Join(err, fmt.Errorf("harness: %s process group %d still alive after SIGKILL", p.cmd.Name, pid))
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		time.Sleep(10 * time.Millisecond)
	}
	for _, st := range allProcs() {
		if st.pgrp == pid {
			reap(st.pid)
		}
	}
	return err
}

var subreaper sync.Once

// becomeSubreaper makes the test binary adopt the orphans of the servers
// it starts (a child killed together with its parent) instead of init, so
// that Stop can reap them: an init that does not reap, as in many
// containers, would leave them as zombies.
func becomeSubreaper() {
	subreaper.Do(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
}

// reap collects pid if it is a dead child of the test binary (an adopted
// orphan); for anything else it does nothing.
func reap(pid int) {
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
}

// ProcessAlive reports whether pid names a running process (a zombie, dead
// but not yet reaped, does not count).
func ProcessAlive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	st, err := procStat(pid)
	return err == nil && st.running()
}

// ProcessGroupAlive reports whether a running process (not a zombie) is in
// process group pgid.
func ProcessGroupAlive(pgid int) bool {
	if pgid <= 0 || syscall.Kill(-pgid, 0) != nil {
		return false
	}
	for _, st := range allProcs() {
		if st.pgrp == pgid && st.running() {
			return true
		}
	}
	return false
}

type procState struct {
	pid, ppid, pgrp int
	state           byte
}

func (s procState) running() bool { return s.state != 'Z' && s.state != 'X' }

// procStat reads a process's state, parent and group from /proc/<pid>/stat.
func procStat(pid int) (procState, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procState{}, err
	}
	// The command name is in parentheses and may itself hold spaces or
	// parentheses; the fields after the last ')' are fixed.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procState{}, fmt.Errorf("harness: unreadable /proc/%d/stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 3 || len(f[0]) != 1 {
		return procState{}, fmt.Errorf("harness: unreadable /proc/%d/stat", pid)
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	if err := errors.Join(err1, err2); err != nil {
		return procState{}, fmt.Errorf("harness: unreadable /proc/%d/stat: %w", pid, err)
	}
	return procState{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0][0]}, nil
}

func allProcs() []procState {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procState
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			if st, err := procStat(n); err == nil {
				out = append(out, st)
			}
		}
	}
	return out
}

// descendants lists the living processes below pid.
func descendants(pid int) []int {
	kids := map[int][]int{}
	for _, st := range allProcs() {
		if st.running() {
			kids[st.ppid] = append(kids[st.ppid], st.pid)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		for _, k := range kids[c] {
			out = append(out, k)
			queue = append(queue, k)
		}
	}
	return out
}

// runTool runs a setup program (initdb, mariadb-install-db) to completion.
// A failure's error holds the program's output.
func runTool(ctx context.Context, name string, u *SystemUser, env []string, path string, args ...string) error {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	cmd.SysProcAttr = sysProcAttr(u)
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := string(out)
		if len(tail) > 4000 {
			tail = "…" + tail[len(tail)-4000:]
		}
		return fmt.Errorf("harness: %s %s: %w\n%s", name, strings.Join(args, " "), err, tail)
	}
	return nil
}
