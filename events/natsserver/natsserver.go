// Package natsserver runs the NATS server with JetStream inside a Tollgate
// process (one machine, or a cluster of them on loopback in tests), and
// connects to an external NATS cluster named in the configuration.
package natsserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/config"
)

// InProcessOnly as Options.Listen starts a server that accepts no network
// connections, only those made with (*Server).Connect.
const InProcessOnly = "-"

// DefaultName is the server name of a single embedded server.
const DefaultName = "tollgate"

// Options configures an embedded server.
type Options struct {
	// Name identifies the server; in a cluster each node needs its own,
	// kept across restarts (JetStream's replicas are bound to it).
	// DefaultName when empty.
	Name string
	// StoreDir holds JetStream's files. Required.
	StoreDir string
	// Listen is host:port for client connections; port 0 picks a free one;
	// InProcessOnly or empty means no listener.
	Listen string
	// MaxPayload is the largest message in bytes; 1 MiB when zero.
	MaxPayload int32
	// Cluster makes the server a node of a JetStream cluster.
	Cluster *Cluster
	// Logger receives the server's log; nil discards it.
	Logger *slog.Logger
	// ReadyTimeout bounds how long Start waits for the server to accept
	// connections; 10s when zero.
	ReadyTimeout time.Duration
	// Leaf makes the server a leaf node of a hub with its own JetStream
	// domain (leaf.go); nil for a standalone server or cluster node.
	Leaf *Leaf
	// Auth, when set, gives every part its own nkey identity and
	// permissions (auth.go) and refuses anonymous connections.
	Auth *Credentials
	// TLS, when set, is required of every network client (ServerTLS).
	TLS *tls.Config
}

// Cluster configures the routes between the nodes of a cluster.
type Cluster struct {
	// Name of the cluster, the same on every node.
	Name string
	// Listen is host:port for routes from the other nodes.
	Listen string
	// Routes are the other nodes' route addresses (host:port or
	// nats-route://host:port); listing the node itself is harmless.
	Routes []string
}

// Server is a running embedded NATS server.
type Server struct {
	srv  *server.Server
	opts Options

	mu    sync.Mutex
	conns []*nats.Conn
	once  sync.Once
}

// Start starts a server and waits until it accepts connections.
func Start(o Options) (*Server, error) {
	so, err := o.serverOptions()
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	// Made here so an unusable store dir fails at once with its reason,
	// not as a server that never becomes ready.
	if err := os.MkdirAll(so.StoreDir, 0o700); err != nil {
		return nil, fmt.Errorf("natsserver: store dir: %w", err)
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	if o.Logger != nil {
		srv.SetLoggerV2(slogAdapter{o.Logger.With("component", "nats", "server", so.ServerName)}, false, false, false)
	}
	srv.Start()
	wait := o.ReadyTimeout
	if wait == 0 {
		wait = 10 * time.Second
	}
	if !srv.ReadyForConnections(wait) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("natsserver: server %s (store %s, listen %q) not ready within %s", so.ServerName, so.StoreDir, o.Listen, wait)
	}
	// The server runs on without JetStream when it cannot start it (an
	// unusable store dir, say); without JetStream there is no audit.
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("natsserver: JetStream did not start with store dir %s (is it writable?)", so.StoreDir)
	}
	return &Server{srv: srv, opts: o}, nil
}

func (o Options) serverOptions() (*server.Options, error) {
	if o.StoreDir == "" {
		return nil, errors.New("store dir is required")
	}
	name := o.Name
	if name == "" {
		name = DefaultName
	}
	so := &server.Options{
		ServerName: name,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		MaxPayload: o.MaxPayload,
		NoSigs:     true,
		NoLog:      o.Logger == nil,
	}
	if so.MaxPayload < 0 {
		return nil, fmt.Errorf("max payload %d is negative", o.MaxPayload)
	}
	if so.MaxPayload == 0 {
		so.MaxPayload = 1 << 20
	}
	if o.Listen == "" || o.Listen == InProcessOnly {
		so.DontListen = true
	} else {
		host, port, err := splitListen(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		so.Host, so.Port = host, port
	}
	if o.Auth != nil {
		so.Nkeys = o.Auth.users()
		if len(so.Nkeys) == 0 {
			return nil, errors.New("auth: no credentials")
		}
	}
	if o.TLS != nil {
		so.TLSConfig = o.TLS
		so.TLS = true
		so.TLSTimeout = 2
	}
	if o.Leaf != nil {
		if err := o.Leaf.apply(so); err != nil {
			return nil, err
		}
	}
	if c := o.Cluster; c != nil {
		if c.Name == "" {
			return nil, errors.New("cluster: name is required")
		}
		host, port, err := splitListen(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("cluster listen: %w", err)
		}
		so.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port}
		for _, r := range c.Routes {
			u, err := routeURL(r)
			if err != nil {
				return nil, fmt.Errorf("cluster route %q: %w", r, err)
			}
			so.Routes = append(so.Routes, u)
		}
	}
	return so, nil
}

// splitListen reads host:port; port 0 asks the server for a free port.
func splitListen(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %w", hp, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: port %q is not a number from 0 to 65535", hp, ps)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

func routeURL(r string) (*url.URL, error) {
	if !strings.Contains(r, "://") {
		r = "nats-route://" + r
	}
	u, err := url.Parse(r)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || u.Port() == "" {
		return nil, errors.New("want host:port or nats-route://host:port")
	}
	return u, nil
}

// Connect opens an in-process connection, which needs no listener and
// skips the network stack. It reconnects for as long as the server runs
// and is drained when the server shuts down.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{
		nats.InProcessServer(s.srv),
		nats.Name("tollgate-" + s.Name()),
		nats.MaxReconnects(-1),
	}, opts...)
	nc, err := nats.Connect("", all...)
	if err != nil {
		return nil, fmt.Errorf("natsserver: in-process connection to %s: %w", s.Name(), err)
	}
	s.mu.Lock()
	s.conns = append(s.conns, nc)
	s.mu.Unlock()
	return nc, nil
}

// ConnectAs opens an in-process connection with part p's identity. On a
// server without Auth it is Connect.
func (s *Server) ConnectAs(p Part, opts ...nats.Option) (*nats.Conn, error) {
	if s.opts.Auth == nil {
		return s.Connect(opts...)
	}
	as, err := s.opts.Auth.Options(p)
	if err != nil {
		return nil, err
	}
	return s.Connect(append(as, opts...)...)
}

// ClientURL is where clients connect over the network; empty for a server
// that listens in-process only.
func (s *Server) ClientURL() string {
	if s.srv.Addr() == nil {
		return ""
	}
	return s.srv.ClientURL()
}

// ClusterURL is where the other nodes route to; empty outside a cluster.
func (s *Server) ClusterURL() string {
	a := s.srv.ClusterAddr()
	if a == nil {
		return ""
	}
	return "nats-route://" + a.String()
}

// Name is the server's name.
func (s *Server) Name() string { return s.srv.Name() }

// StoreDir is where JetStream keeps its files.
func (s *Server) StoreDir() string { return s.opts.StoreDir }

// Options are the options the server was started with.
func (s *Server) Options() Options { return s.opts }

// NATSServer is the underlying server, for monitoring and tests.
func (s *Server) NATSServer() *server.Server { return s.srv }

// WaitJetStream waits until JetStream answers on this node: at once for a
// single server, after the cluster elected its meta leader otherwise.
func (s *Server) WaitJetStream(ctx context.Context) error {
	opts := []nats.Option{nats.InProcessServer(s.srv)}
	if s.opts.Auth != nil {
		as, err := s.opts.Auth.Options(Auditor)
		if err != nil {
			return err
		}
		opts = append(opts, as...)
	}
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return fmt.Errorf("natsserver: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natsserver: JetStream on %s not ready: %w (last error: %v)", s.Name(), ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Shutdown drains the connections made with Connect, so what they sent is
// delivered, then stops the server and waits until it has stopped. It may
// be called more than once.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		s.mu.Lock()
		conns := s.conns
		s.conns = nil
		s.mu.Unlock()
		for _, nc := range conns {
			if err := nc.Drain(); err != nil {
				nc.Close()
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for _, nc := range conns {
			for !nc.IsClosed() && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			nc.Close()
		}
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	})
}

// StartCluster starts n nodes of a JetStream cluster on loopback, named
// <prefix>-1 … <prefix>-n with stores under dir/<name>, and waits until
// JetStream answers on every node. base supplies the other options
// (MaxPayload, Logger); its Name is the prefix ("n" when empty). Restart a
// stopped node with Start(node.Options()).
func StartCluster(ctx context.Context, dir string, n int, base Options) ([]*Server, error) {
	if n < 1 {
		return nil, fmt.Errorf("natsserver: cluster of %d nodes", n)
	}
	prefix := base.Name
	if prefix == "" {
		prefix = "n"
	}
	ports, err := freePorts(n)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	var nodes []*Server
	fail := func(err error) ([]*Server, error) {
		for _, s := range nodes {
			s.Shutdown()
		}
		return nil, err
	}
	for i := range n {
		o := base
		o.Name = fmt.Sprintf("%s-%d", prefix, i+1)
		o.StoreDir = filepath.Join(dir, o.Name)
		if o.Listen == "" {
			o.Listen = "127.0.0.1:0"
		}
		o.Cluster = &Cluster{Name: prefix, Listen: routes[i], Routes: routes}
		if base.Cluster != nil && base.Cluster.Name != "" {
			o.Cluster.Name = base.Cluster.Name
		}
		s, err := Start(o)
		if err != nil {
			return fail(err)
		}
		nodes = append(nodes, s)
	}
	for _, s := range nodes {
		if err := s.WaitJetStream(ctx); err != nil {
			return fail(err)
		}
	}
	return nodes, nil
}

// freePorts finds n free loopback ports. Another process could take one
// before the server binds it; on loopback in a test that is rare enough.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// FromConfig returns the options of the embedded server the configuration
// describes: every part with its own identity (the seeds made in the
// credentials dir on first use, so an older data dir gets them on its next
// start) and TLS on its network listener.
func FromConfig(c *config.Config) (Options, error) {
	o := Options{
		Name:       DefaultName,
		StoreDir:   c.NATS.Embedded.StoreDir,
		Listen:     c.NATS.Embedded.Listen,
		MaxPayload: c.NATS.Embedded.MaxPayload,
		Leaf:       LeafFromConfig(c),
	}
	if o.StoreDir == "" {
		o.StoreDir = filepath.Join(c.DataDir, "nats")
	}
	creds, err := LoadOrCreateCredentials(CredentialsDir(c))
	if err != nil {
		return Options{}, err
	}
	o.Auth = creds
	if o.Listen != "" && o.Listen != InProcessOnly {
		host, _, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return Options{}, fmt.Errorf("natsserver: nats.embedded.listen %q: %w", o.Listen, err)
		}
		if o.TLS, err = ServerTLS(creds.Dir, host); err != nil {
			return Options{}, err
		}
	}
	return o, nil
}

// CredentialsDir is where the configuration keeps the parts' seeds.
func CredentialsDir(c *config.Config) string {
	if c.NATS.CredentialsDir != "" {
		return c.NATS.CredentialsDir
	}
	return filepath.Join(c.DataDir, "nats-auth")
}

// DialEmbedded connects as part p to the embedded server of a running
// daemon at nats.embedded.listen, over TLS pinned to the certificate in
// the credentials dir. It does not reconnect: admin commands are short.
func DialEmbedded(c *config.Config, p Part, extra ...nats.Option) (*nats.Conn, error) {
	listen := c.NATS.Embedded.Listen
	if listen == "" || listen == InProcessOnly {
		return nil, errors.New("natsserver: nats.embedded.listen is in-process only")
	}
	creds, err := LoadCredentials(CredentialsDir(c))
	if err != nil {
		return nil, err
	}
	opts, err := creds.Options(p)
	if err != nil {
		return nil, err
	}
	url := "nats://" + listen
	if cert := filepath.Join(creds.Dir, TLSCertFile); fileExists(cert) {
		url = "tls://" + listen
		opts = append(opts, nats.RootCAs(cert))
	}
	opts = append(opts, nats.Timeout(time.Second), nats.NoReconnect())
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("natsserver: connect as %s to %s: %w", p, url, err)
	}
	return nc, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Connect connects to the external NATS servers of the configuration as
// part p, with the part's seed from nats.credentials_dir or the one
// credential the configuration names, and its TLS files. The connection
// reconnects forever: a Tollgate process outlives a NATS restart.
func Connect(cfg config.NATS, p Part, extra ...nats.Option) (*nats.Conn, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("natsserver: nats.urls is empty: nothing to connect to")
	}
	opts := []nats.Option{
		nats.Name("tollgate"),
		nats.MaxReconnects(-1),
	}
	var auth []string
	if cfg.CredentialsDir != "" {
		auth = append(auth, "credentials_dir")
		creds, err := LoadCredentials(cfg.CredentialsDir)
		if err != nil {
			return nil, fmt.Errorf("natsserver: nats.credentials_dir: %w", err)
		}
		o, err := creds.Options(p)
		if err != nil {
			return nil, fmt.Errorf("natsserver: nats.credentials_dir: %w", err)
		}
		opts = append(opts, o...)
	}
	if cfg.CredsFile != "" {
		auth = append(auth, "creds_file")
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeySeedFile != "" {
		auth = append(auth, "nkey_seed_file")
		o, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("natsserver: nats.nkey_seed_file: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.User != "" || cfg.Password != "" {
		auth = append(auth, "user/password")
		if cfg.User == "" || cfg.Password == "" {
			return nil, errors.New("natsserver: nats.user and nats.password go together: one of them is empty")
		}
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		auth = append(auth, "token")
		opts = append(opts, nats.Token(cfg.Token))
	}
	if len(auth) > 1 {
		return nil, fmt.Errorf("natsserver: nats credentials: set one of credentials_dir, creds_file, nkey_seed_file, user/password, token (got %s)", strings.Join(auth, ", "))
	}
	if t := cfg.TLS; t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" {
		if (t.CertFile == "") != (t.KeyFile == "") {
			return nil, errors.New("natsserver: nats.tls.cert_file and nats.tls.key_file go together: one of them is empty")
		}
		if t.CAFile != "" {
			opts = append(opts, nats.RootCAs(t.CAFile))
		}
		if t.CertFile != "" {
			opts = append(opts, nats.ClientCert(t.CertFile, t.KeyFile))
		}
	}
	opts = append(opts, extra...)
	urls := strings.Join(cfg.URLs, ",")
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		// The error names the servers, never the credentials.
		return nil, fmt.Errorf("natsserver: connect to %s: %w", redactURLs(cfg.URLs), err)
	}
	return nc, nil
}

// redactURLs hides passwords and tokens written into URLs.
func redactURLs(urls []string) string {
	out := make([]string, len(urls))
	for i, s := range urls {
		u, err := url.Parse(s)
		if err != nil || u.User == nil {
			out[i] = s
			continue
		}
		u.User = url.User("redacted")
		out[i] = u.String()
	}
	return strings.Join(out, ",")
}

// slogAdapter gives the server's log lines to slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
