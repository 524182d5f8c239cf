package faults

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/test/harness"
)

// Node is one `tollgate start` process running some roles of a
// configuration, as an operator would run the broker, the agent and the
// exporters apart.
type Node struct {
	Name   string
	Bin    string
	Config string
	Roles  []string
	// Ready is true once the node serves (its port accepts, say).
	Ready func() error
	Log   string
	proc  *harness.Process
}

// Start starts the node and waits until Ready.
func (n *Node) Start() error {
	args := []string{"start", "--config", n.Config}
	if len(n.Roles) > 0 {
		args = append(args, "--roles="+strings.Join(n.Roles, ","))
	}
	p, err := harness.StartProcess(harness.Command{Name: "tollgate " + n.Name, Path: n.Bin, Args: args,
		Env: childEnv(), Log: n.Log, StopTimeout: 20 * time.Second})
	if err != nil {
		return err
	}
	n.proc = p
	ready := n.Ready
	if ready == nil {
		ready = func() error { return nil }
	}
	return p.WaitReady(90*time.Second, ready)
}

// Kill SIGKILLs the node.
func (n *Node) Kill() error { return kill(n.proc) }

// Stop stops the node with SIGTERM (its clean shutdown).
func (n *Node) Stop() error {
	if n.proc == nil {
		return nil
	}
	return n.proc.Stop()
}

// Pid of the running node.
func (n *Node) Pid() int { return n.proc.Pid() }

// Running reports whether the process is alive.
func (n *Node) Running() bool {
	if n.proc == nil {
		return false
	}
	select {
	case <-n.proc.Done():
		return false
	default:
		return true
	}
}

// LogTail is the end of the node's log.
func (n *Node) LogTail() string {
	if n.proc == nil {
		return ""
	}
	return n.proc.LogTail(40)
}

// dialable is a Ready check: addr accepts TCP connections.
func dialable(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// childEnv is the test's environment without the machine's Tollgate and
// libpq settings.
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TOLLGATE_") || strings.HasPrefix(kv, "PG") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// Binaries are the programs the campaign runs.
type Binaries struct {
	Tollgate, NATSServer string
}

// binariesIn names the programs built into dir.
func binariesIn(dir string) Binaries {
	return Binaries{Tollgate: filepath.Join(dir, "tollgate"), NATSServer: filepath.Join(dir, "nats-server")}
}
