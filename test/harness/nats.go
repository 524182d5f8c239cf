package harness

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSServer is a NATS server with JetStream (file storage) embedded in the
// test binary. It has no authentication: tests that need it configure
// their own server.
type NATSServer struct {
	Name     string
	StoreDir string
	LogFile  string

	opts *server.Options // kept so a restart comes back with the same name, ports and store
	mu   sync.Mutex
	srv  *server.Server
}

// NATS starts a single JetStream node for this test, shut down when the
// test ends.
func NATS(t testing.TB) *NATSServer {
	t.Helper()
	return NATSWith(t, nil)
}

// NATSWith is NATS with the server options adjusted by configure (when not
// nil) before the start, e.g. to add accounts or TLS. The harness has set
// name, host, port, JetStream and store; a restart reuses the options.
func NATSWith(t testing.TB, configure func(*server.Options)) *NATSServer {
	t.Helper()
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	n := newNATSNode("tg-test-0", dir, port)
	if configure != nil {
		configure(n.opts)
	}
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	logOnFailure(t, n.tail)
	return n
}

func newNATSNode(name, dir string, port int) *NATSServer {
	n := &NATSServer{
		Name:     name,
		StoreDir: filepath.Join(dir, name, "jetstream"),
		LogFile:  filepath.Join(dir, name+".log"),
	}
	n.opts = &server.Options{
		ServerName:         name,
		Host:               "127.0.0.1",
		Port:               port,
		HTTPPort:           0,
		JetStream:          true,
		StoreDir:           n.StoreDir,
		JetStreamMaxMemory: 64 << 20,
		JetStreamMaxStore:  1 << 30,
		NoSigs:             true,
		LogFile:            n.LogFile,
		Logtime:            true,
	}
	return n
}

func (n *NATSServer) start() error {
	opts := n.opts.Clone()
	s, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("harness: nats %s: %w", n.Name, err)
	}
	s.ConfigureLogger()
	s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		tail, _ := fileTail(n.LogFile, 30)
		return fmt.Errorf("harness: nats %s not ready on port %d after 20s\n--- last lines of %s ---\n%s", n.Name, n.opts.Port, n.LogFile, tail)
	}
	n.mu.Lock()
	n.srv = s
	n.mu.Unlock()
	return nil
}

func (n *NATSServer) tail() string {
	tail, err := fileTail(n.LogFile, 40)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("--- last lines of %s ---\n%s", n.LogFile, tail)
}

// Server is the running server (nil while stopped), e.g. for in-process
// connections.
func (n *NATSServer) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Port is the client port on 127.0.0.1.
func (n *NATSServer) Port() int { return n.opts.Port }

// URL is the client URL, nats://127.0.0.1:<port>.
func (n *NATSServer) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.opts.Port) }

// Options is a copy of the options the server runs with.
func (n *NATSServer) Options() *server.Options { return n.opts.Clone() }

// Running reports whether the server is up.
func (n *NATSServer) Running() bool {
	s := n.Server()
	return s != nil && s.Running()
}

// Stop shuts the server down and waits until it has; its store stays for
// Restart. Stopping a stopped server does nothing.
func (n *NATSServer) Stop() {
	n.mu.Lock()
	s := n.srv
	n.srv = nil
	n.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart stops the server and starts it again with the same name, port
// and store.
func (n *NATSServer) Restart() error {
	n.Stop()
	return n.start()
}

// JetStreamCluster is a JetStream cluster of embedded nodes joined by
// routes on loopback.
type JetStreamCluster struct {
	Name  string
	Nodes []*NATSServer
}

// NATSCluster starts a JetStream cluster of size nodes (3 for R3 streams)
// and waits until it has a meta leader that knows every node. It is shut
// down when the test ends.
func NATSCluster(t testing.TB, size int) *JetStreamCluster {
	t.Helper()
	if size < 1 {
		t.Fatalf("harness: NATSCluster size %d: need at least one node", size)
	}
	dir := t.TempDir()
	c := &JetStreamCluster{Name: "tg-test"}
	clientPorts, routePorts := make([]int, size), make([]int, size)
	for i := range size {
		var err1, err2 error
		clientPorts[i], err1 = freePort()
		routePorts[i], err2 = freePort()
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.stopAll)
	logOnFailure(t, c.tail)
	for i := range size {
		n := newNATSNode(fmt.Sprintf("tg-test-%d", i), dir, clientPorts[i])
		n.opts.Cluster = server.ClusterOpts{Name: c.Name, Host: "127.0.0.1", Port: routePorts[i]}
		var routes []string
		for j, p := range routePorts {
			if j != i {
				routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(p))
			}
		}
		n.opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		c.Nodes = append(c.Nodes, n)
	}
	// Started together: each node waits for its peers before JetStream
	// is ready, so starting them one after another would wait in turn.
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Go(func() { errs[i] = n.start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *JetStreamCluster) stopAll() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Go(n.Stop)
	}
	wg.Wait()
}

func (c *JetStreamCluster) tail() string {
	var b strings.Builder
	for _, n := range c.Nodes {
		b.WriteString(n.tail())
		b.WriteByte('\n')
	}
	return b.String()
}

// URLs are the client URLs of every node, running or not.
func (c *JetStreamCluster) URLs() []string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL()
	}
	return urls
}

// URL lists every node's client URL, comma-separated, as nats.Connect
// takes it so a client fails over between nodes.
func (c *JetStreamCluster) URL() string { return strings.Join(c.URLs(), ",") }

// StopNode shuts node i down; the others keep serving while a majority
// runs.
func (c *JetStreamCluster) StopNode(i int) { c.Nodes[i].Stop() }

// RestartNode starts node i again (stopping it first if it runs) and waits
// until it has caught up with the meta leader.
func (c *JetStreamCluster) RestartNode(i int) error {
	if err := c.Nodes[i].Restart(); err != nil {
		return err
	}
	return c.WaitReady(30 * time.Second)
}

// Leader is the node that is the JetStream meta leader, or nil.
func (c *JetStreamCluster) Leader() *NATSServer {
	for _, n := range c.Nodes {
		if s := n.Server(); s != nil && s.JetStreamIsLeader() {
			return n
		}
	}
	return nil
}

// WaitReady waits until the running nodes have a meta leader that knows
// them all and every running node is current with it.
func (c *JetStreamCluster) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		state := c.readiness()
		if state == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("harness: JetStream cluster not ready after %s: %s\n%s", timeout, state, c.tail())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// readiness says what the cluster still lacks, or "" when it is ready.
func (c *JetStreamCluster) readiness() string {
	leader := c.Leader()
	if leader == nil {
		return "no meta leader"
	}
	running := 0
	for _, n := range c.Nodes {
		if n.Running() {
			running++
		}
	}
	if peers := leader.Server().JetStreamClusterPeers(); len(peers) < running {
		return fmt.Sprintf("meta leader %s sees %d of %d running nodes", leader.Name, len(peers), running)
	}
	for _, n := range c.Nodes {
		if s := n.Server(); s != nil && !s.JetStreamIsCurrent() {
			return fmt.Sprintf("node %s not current with the meta leader", n.Name)
		}
	}
	return ""
}

// portClosed reports whether nothing accepts connections on 127.0.0.1:port.
func portClosed(port int) bool {
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return true
	}
	conn.Close()
	return false
}
