package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// demoServer is what the demo's throwaway database servers have in common:
// a temporary directory, the server process in a process group of its own
// and what its exit said, a readiness wait and an orderly stop.
type demoServer struct {
	// program names the server in messages.
	program string
	// Dir holds the server's data, socket and TLS files; Stop removes it.
	Dir string
	// stopSignal asks the server to shut down cleanly.
	stopSignal syscall.Signal
	// detail says where to look when the server failed: a file to read
	// or the last lines of its log.
	detail func() string
	cmd    *exec.Cmd
	exited chan error
}

func newDemoServer(program, dir string, stopSignal syscall.Signal, detail func() string) demoServer {
	return demoServer{program: program, Dir: dir, stopSignal: stopSignal, detail: detail, exited: make(chan error, 1)}
}

// start starts cmd in its own process group, which keeps the terminal's
// Ctrl-C away from the server (the demo stops it in order), with a
// parent-death signal that stops it if the demo is killed. cred runs it
// as another user when set.
func (s *demoServer) start(cmd *exec.Cmd, cred *syscall.Credential) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: s.stopSignal}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", s.program, err)
	}
	s.cmd = cmd
	go func() { s.exited <- cmd.Wait() }()
	return nil
}

// waitReady calls ready until it succeeds, the server exits, ctx ends or
// timeout passes.
func (s *demoServer) waitReady(ctx context.Context, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case werr := <-s.exited:
			s.exited <- werr
			return fmt.Errorf("%s exited at start (%v): %s", s.program, werr, s.detail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s: %v: %s", s.program, timeout, err, s.detail())
		}
	}
}

// Stop shuts the server down, killing its process group if it has not
// stopped within 20 s, and removes its directory.
func (s *demoServer) Stop() error {
	var err error
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(s.stopSignal)
		select {
		case <-s.exited:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
			err = fmt.Errorf("%s did not stop within 20s and was killed", s.program)
		}
	}
	if rerr := os.RemoveAll(s.Dir); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}
