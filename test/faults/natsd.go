package faults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/test/harness"
)

// NATSOptions configure a nats-server process.
type NATSOptions struct {
	// Name is the server name; "faults" when empty.
	Name string
	// Dir holds the configuration, the log and the JetStream store.
	Dir string
	// MaxFileStore bounds JetStream's file store in bytes (0: the disk).
	MaxFileStore int64
	// Domain is the JetStream domain (a hub's, for leaf nodes).
	Domain string
	// Leafnodes opens a leaf node listener.
	Leafnodes bool
	// Cluster, ClusterPort and Routes make the server a node of a
	// cluster (StartNATSCluster fills them).
	Cluster     string
	ClusterPort int
	Routes      []string
}

// NATSD is a nats-server process built from the nats-server module this
// repository depends on: a separate process, so it can be SIGKILLed.
type NATSD struct {
	Port, LeafPort int
	bin, conf, log string
	o              NATSOptions
	proc           *harness.Process
}

// StartNATS writes the configuration and starts the server.
func StartNATS(bin string, o NATSOptions) (*NATSD, error) {
	n, err := prepareNATS(bin, o)
	if err != nil {
		return nil, err
	}
	return n, n.Start()
}

// StartNATSCluster starts size nodes of a JetStream cluster, each its own
// process, and waits until JetStream answers on every one.
func StartNATSCluster(bin, dir string, size int) ([]*NATSD, error) {
	ports := make([]int, size)
	routes := make([]string, size)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i], routes[i] = p, fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	nodes := make([]*NATSD, size)
	for i := range nodes {
		n, err := prepareNATS(bin, NATSOptions{Name: fmt.Sprintf("n%d", i+1), Dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			Cluster: "faults", ClusterPort: ports[i], Routes: routes})
		if err != nil {
			return nil, err
		}
		nodes[i] = n
	}
	// Started together: a node's JetStream waits for its peers.
	for _, n := range nodes {
		if err := n.spawn(); err != nil {
			return nodes, err
		}
	}
	for _, n := range nodes {
		if err := n.waitReady(); err != nil {
			return nodes, err
		}
	}
	return nodes, nil
}

func prepareNATS(bin string, o NATSOptions) (*NATSD, error) {
	if o.Name == "" {
		o.Name = "faults"
	}
	n := &NATSD{bin: bin, o: o, conf: filepath.Join(o.Dir, "nats.conf"), log: filepath.Join(o.Dir, "nats.log")}
	var err error
	if n.Port, err = freePort(); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %q\nlisten: \"127.0.0.1:%d\"\n", o.Name, n.Port)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  max_memory_store: 67108864\n", filepath.Join(o.Dir, "store"))
	if o.MaxFileStore > 0 {
		fmt.Fprintf(&b, "  max_file_store: %d\n", o.MaxFileStore)
	}
	if o.Domain != "" {
		fmt.Fprintf(&b, "  domain: %q\n", o.Domain)
	}
	b.WriteString("}\n")
	if o.Leafnodes {
		if n.LeafPort, err = freePort(); err != nil {
			return nil, err
		}
		// Not advertised: a leaf would learn the address and go around a
		// cut Link.
		fmt.Fprintf(&b, "leafnodes {\n  listen: \"127.0.0.1:%d\"\n  no_advertise: true\n}\n", n.LeafPort)
	}
	if o.Cluster != "" {
		fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: \"127.0.0.1:%d\"\n  routes: [\n", o.Cluster, o.ClusterPort)
		for _, r := range o.Routes {
			fmt.Fprintf(&b, "    %q\n", r)
		}
		b.WriteString("  ]\n}\n")
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(n.conf, []byte(b.String()), 0o600); err != nil {
		return nil, err
	}
	return n, nil
}

// URL is the client URL.
func (n *NATSD) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.Port) }

// Addr is host:port of the client listener.
func (n *NATSD) Addr() string { return "127.0.0.1:" + strconv.Itoa(n.Port) }

// Pid of the running server.
func (n *NATSD) Pid() int { return n.proc.Pid() }

// Start starts the server (again, after Kill) and waits until JetStream
// answers.
func (n *NATSD) Start() error {
	if err := n.spawn(); err != nil {
		return err
	}
	return n.waitReady()
}

func (n *NATSD) spawn() error {
	p, err := harness.StartProcess(harness.Command{Name: "nats-server " + n.o.Name, Path: n.bin,
		Args: []string{"-c", n.conf}, Log: n.log, StopTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

func (n *NATSD) waitReady() error {
	return n.proc.WaitReady(60*time.Second, func() error {
		nc, err := nats.Connect(n.URL(), nats.Timeout(time.Second))
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err
	})
}

// SetMaxFileStore rewrites the JetStream store limit; it takes effect at
// the next Start.
func (n *NATSD) SetMaxFileStore(max int64) error {
	b, err := os.ReadFile(n.conf)
	if err != nil {
		return err
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "max_file_store") {
			continue
		}
		out = append(out, l)
		if strings.HasPrefix(l, "jetstream {") {
			out = append(out, fmt.Sprintf("  max_file_store: %d", max))
		}
	}
	n.o.MaxFileStore = max
	return os.WriteFile(n.conf, []byte(strings.Join(out, "\n")), 0o600)
}

// Kill SIGKILLs the server and waits until it is gone.
func (n *NATSD) Kill() error { return kill(n.proc) }

// Stop stops the server cleanly.
func (n *NATSD) Stop() error {
	if n.proc == nil {
		return nil
	}
	return n.proc.Stop()
}

// LogTail is the end of the server's log.
func (n *NATSD) LogTail() string { return n.proc.LogTail(30) }

// kill SIGKILLs p and waits until it has been reaped.
func kill(p *harness.Process) error {
	if p == nil {
		return errors.New("no process")
	}
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %d: %w", p.Pid(), err)
	}
	select {
	case <-p.Done():
		// Stop reaps whatever the process left in its group.
		_ = p.Stop()
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("process %d still there 10s after SIGKILL", p.Pid())
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
