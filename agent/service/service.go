// Package service runs the agent as a long-lived service: it gets the
// agent's credentials from the cluster's certificate authorities, registers
// its databases in STATE (through the broker's API when it joined from
// another machine) with heartbeats, and serves agent.Server on
// db_service.listen. `tollgate start` runs it as the agent role.
//
// Clients reach a database by dialing the agent's public address (the
// database record in STATE carries it as AgentAddr) with TLS server name
// (SNI) equal to the database name, presenting a user certificate; see
// protocol.ServerName.
package service

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/awsiam"
	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/protocol"
)

// Default heartbeat timing: a database is listed for HeartbeatTTL after
// its last heartbeat, and heartbeats come three times per TTL so that one
// lost beat does not expire it.
const (
	DefaultHeartbeatTTL = 30 * time.Second
)

// Options configure Start.
type Options struct {
	Config *config.Config
	// JS is the JetStream of the cluster; STATE must exist.
	JS jetstream.JetStream
	// Recorder stores audit events (the events.Publisher of the process).
	Recorder agent.Recorder
	Log      *slog.Logger
	// Listener, when set, is served instead of listening on
	// db_service.listen.
	Listener net.Listener
	// HeartbeatTTL defaults to DefaultHeartbeatTTL; heartbeats are sent
	// every third of it.
	HeartbeatTTL time.Duration
	// Register records a database the agent serves, beside the broker
	// (broker.enabled): the broker's own registration, so that the
	// agent's connection to NATS may stay read-only on STATE. nil means
	// state.Store.RegisterDatabase on JS. An agent that joined a broker
	// elsewhere always registers through the broker's API.
	Register func(ctx context.Context, d state.NewDatabase) error
}

// Service is a running agent.
type Service struct {
	// Addr is where the agent listens; PublicAddr is where clients reach
	// it, as registered with every database.
	Addr, PublicAddr string
	// Ports are the addresses of the ports engines serve of their own
	// (agent.PortServer), by engine: MySQL's is where MySQL clients
	// connect without tg (db_service.mysql_listen).
	Ports map[string]string
	// HostID names the agent in STATE (the CN of its host certificate).
	HostID string
	// HostCA verifies the agent's certificate (what clients trust).
	HostCA *x509.Certificate
	Server *agent.Server
	// Tunnels are the reverse tunnels to db_service.proxy_addrs; nil
	// without them.
	Tunnels *tunnel.Listener
	// Store is the broker's store on Options.JS, opened only beside the
	// broker without Options.Register; nil otherwise.
	Store *state.Store

	log  *slog.Logger
	done chan error
}

// Enabled reports whether a configuration asks for the agent: db_service
// enabled explicitly, or left unset with databases configured.
func Enabled(c *config.Config) bool {
	if c.DBService.Enabled != nil {
		return *c.DBService.Enabled
	}
	return len(c.DBService.Databases) > 0
}

// Start brings the agent up and serves until ctx ends; Wait returns then.
//
// The agent uses the certificate authorities of the data dir directly when
// the broker runs in the same process (broker.enabled, the default): it
// signs its own host certificate and the db-client certificates it presents
// to databases. An agent on another machine would join with
// db_service.join_token; see errRemoteJoin for what that still needs.
func Start(ctx context.Context, o Options) (s *Service, err error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	cfg := o.Config
	local := brokerInProcess(cfg)
	if !local {
		if err := needLocalCAs(cfg.DBService.Databases); err != nil {
			return nil, err
		}
	}
	hostID, err := loadHostID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s = &Service{HostID: hostID, Ports: map[string]string{}, log: o.Log, done: make(chan error, 1)}
	var lns []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
		}
	}()
	ln, names, err := s.listen(cfg, o.Listener)
	if ln != nil {
		lns = append(lns, ln)
	}
	if err != nil {
		return nil, err
	}
	auth, err := s.authorities(ctx, cfg, local, names, o.Recorder)
	if err != nil {
		return nil, err
	}
	dbs, err := withDBCA(cfg.DBService.Databases, auth.dbCAPEM, filepath.Join(cfg.DataDir, "agent"))
	if err != nil {
		return nil, err
	}
	store, reg, err := s.openState(ctx, o, auth, dbs)
	if err != nil {
		return nil, err
	}
	// s is nil once an error is returned.
	defer func() {
		if err != nil {
			store.Close()
		}
	}()
	// Locks, certificate and grant ends and idleness end live sessions.
	life := agent.NewLifecycle(store, agent.LifecycleOptions{Logger: o.Log})
	engines, err := s.newServer(ctx, o, auth, dbs, store, life)
	if err != nil {
		return nil, err
	}
	more, err := s.openTunnels(ctx, o.JS, cfg, auth, dbs, o.Log)
	lns = append(lns, more...)
	if err != nil {
		return nil, err
	}
	more, err = s.openPorts(engines)
	lns = append(lns, more...)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = reg.registerAll(rctx)
	cancel()
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() { reg.beat(ctx) })
	wg.Go(func() { life.Run(ctx) })
	go func() {
		err := s.Server.Serve(ctx, lns...)
		wg.Wait()
		store.Close()
		s.done <- err
	}()
	o.Log.Info("agent listening", "addr", s.Addr, "proxy_addrs", cfg.DBService.ProxyAddrs, "public_addr", s.PublicAddr, "ports", s.Ports, "host_id", hostID,
		"databases", len(dbs), "heartbeat_ttl", o.HeartbeatTTL)
	return s, nil
}

// check says what Start lacks and fills in the defaults.
func (o *Options) check() error {
	if o.Config == nil || o.JS == nil || o.Recorder == nil {
		return errors.New("agent service: Config, JS and Recorder are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.HeartbeatTTL <= 0 {
		o.HeartbeatTTL = DefaultHeartbeatTTL
	}
	if len(o.Config.DBService.Databases) == 0 {
		return errors.New("db_service: no databases configured (db_service.databases)")
	}
	return nil
}

// needLocalCAs refuses, on an agent without the broker in its process,
// databases whose engine needs the data dir's certificate authorities:
// before anything is joined or listened on.
func needLocalCAs(dbs []config.Database) error {
	for i, d := range dbs {
		if r, ok := agent.LookupEngine(protocol.EngineOf(d.Protocol)); ok && r.LocalCAs != "" {
			return fmt.Errorf("db_service.databases[%d] (%s): %s needs the broker in the agent's process for now: %s", i, d.Name, protocol.Get(d.Protocol).Display, r.LocalCAs)
		}
	}
	return nil
}

// listen opens db_service.listen (or takes ln), sets the service's
// addresses and returns the host names its certificate must hold. An
// agent that tunnels to proxies listens only when db_service.listen says
// so; ln is nil then.
func (s *Service) listen(cfg *config.Config, given net.Listener) (ln net.Listener, names []string, err error) {
	ln = given
	if ln == nil && cfg.DBService.Listen != "" {
		if ln, err = net.Listen("tcp", cfg.DBService.Listen); err != nil {
			return nil, nil, fmt.Errorf("db_service.listen: %w", err)
		}
	}
	if ln == nil && len(cfg.DBService.ProxyAddrs) == 0 {
		return nil, nil, errors.New("db_service: neither listen nor proxy_addrs is set: clients could not reach the agent")
	}
	if ln == nil {
		// Clients reach a tunneled agent through a proxy, with the
		// database as SNI. The proxy's host is not put in the agent's
		// certificate: that would let the agent pass for the proxy.
		s.PublicAddr = cfg.DBService.PublicAddr
		if s.PublicAddr == "" {
			s.PublicAddr = cfg.DBService.ProxyAddrs[0]
		}
		return nil, hostNames(cfg.DBService.Databases), nil
	}
	s.Addr = ln.Addr().String()
	if s.PublicAddr, err = publicAddr(cfg.DBService.PublicAddr, s.Addr); err != nil {
		return ln, nil, err
	}
	return ln, hostNames(cfg.DBService.Databases, s.PublicAddr, s.Addr), nil
}

// authorities gets the agent's certificates, from the data dir's CAs
// beside the broker or by joining one elsewhere, and makes the recorder
// sign with the host key.
func (s *Service) authorities(ctx context.Context, cfg *config.Config, local bool, names []string, rec agent.Recorder) (auth *authorities, err error) {
	if local {
		auth, err = localAuthorities(cfg.DataDir, s.HostID, names)
	} else {
		auth, err = joinedAuthorities(ctx, cfg, s.HostID, names)
	}
	if err != nil {
		return nil, err
	}
	s.HostCA = auth.hostCA
	// The agent signs its frames and seals its sessions with its host key:
	// `audit verify` trusts what the host CA certified.
	if sp, ok := rec.(interface{ SetSigner(*events.Signer) }); ok {
		key, _ := auth.host.PrivateKey.(crypto.Signer)
		signer, err := events.NewSigner(key, auth.host.Leaf)
		if err != nil {
			return nil, fmt.Errorf("agent service: signing key: %w", err)
		}
		sp.SetSigner(signer)
	}
	return auth, nil
}

// openState opens what the agent reads of STATE and the registrar of its
// databases. The agent reads STATE and writes only heartbeats, unless it
// is to register beside the broker with the broker's store on JS.
func (s *Service) openState(ctx context.Context, o Options, auth *authorities, dbs []config.Database) (*state.Projection, *registrar, error) {
	cfg := o.Config
	var (
		store    *state.Projection
		beat     func(ctx context.Context, by state.Actor, name, hostID string) error
		register = o.Register
		err      error
	)
	if auth.broker == nil && register == nil {
		if s.Store, err = state.Open(ctx, o.JS, cfg.ClusterName); err != nil {
			return nil, nil, fmt.Errorf("agent service: %w", err)
		}
		st, hostID := s.Store, s.HostID
		store, beat = st.Projection, st.Heartbeat
		register = func(ctx context.Context, d state.NewDatabase) error {
			_, err := st.RegisterDatabase(ctx, state.Actor{User: "host:" + hostID}, d)
			return err
		}
	} else {
		if store, err = state.Follow(ctx, o.JS); err != nil {
			return nil, nil, fmt.Errorf("agent service: %w", err)
		}
		b, berr := state.NewBeater(ctx, o.JS, store, cfg.ClusterName)
		if berr != nil {
			store.Close()
			return nil, nil, fmt.Errorf("agent service: %w", berr)
		}
		beat = b.Beat
		if auth.broker != nil {
			register = apiRegister(auth.broker)
		}
	}
	reg := &registrar{state: store, register: register, heartbeat: beat, hostID: s.HostID, addr: s.PublicAddr, ttl: o.HeartbeatTTL, log: o.Log}
	for _, d := range dbs {
		reg.dbs = append(reg.dbs, state.NewDatabase{Name: d.Name, Protocol: d.Protocol, URI: d.URI,
			Labels: d.StaticLabels, HostID: s.HostID, AgentAddr: s.PublicAddr, HeartbeatTTL: o.HeartbeatTTL})
	}
	return store, reg, nil
}

// newServer builds the engines and the agent's server; it returns the
// engines by name.
func (s *Service) newServer(ctx context.Context, o Options, auth *authorities, dbs []config.Database, store *state.Projection, life *agent.Lifecycle) (map[string]agent.Engine, error) {
	cfg := o.Config
	engines, byProtocol, err := buildEngines(ctx, dbs, agent.EngineParams{
		Config: cfg, Recorder: o.Recorder, Host: auth.host, CAs: auth.local, DataDir: cfg.DataDir, Log: o.Log,
		// Databases behind RDS Proxy get an IAM token as their password.
		Password: awsiam.NewRegistry(awsiam.Options{}).Token,
	})
	if err != nil {
		return nil, err
	}
	s.Server, err = agent.NewServer(agent.ServerConfig{
		Cluster:   cfg.ClusterName,
		Databases: dbs,
		TLS:       &tls.Config{Certificates: []tls.Certificate{auth.host}},
		UserCAs:   auth.userCAs,
		Identify:  identity.FromCertificate,
		Authorize: agent.RoleAuthorizer(func(names []string) []access.Role {
			roles, _ := store.ResolveRoles(names)
			return roles
		}),
		Recorder:   o.Recorder,
		ClientCert: agent.CachedDatabaseClientCerts(auth.issue, ca.DefaultDBClientTTL),
		Engines:    byProtocol,
		Logger:     o.Log,
		Lifecycle:  life,
		// db_service connection limits, refused in the protocol's form.
		MaxConnections:        cfg.DBService.MaxConnections,
		MaxConnectionsPerUser: cfg.DBService.MaxConnectionsPerUser,
	})
	if err != nil {
		return nil, err
	}
	return engines, nil
}

// openTunnels opens the reverse tunnels to db_service.proxy_addrs, if any.
func (s *Service) openTunnels(ctx context.Context, js jetstream.JetStream, cfg *config.Config, auth *authorities, dbs []config.Database, log *slog.Logger) ([]net.Listener, error) {
	if len(cfg.DBService.ProxyAddrs) == 0 {
		return nil, nil
	}
	roots := x509.NewCertPool()
	roots.AddCert(auth.hostCA)
	var served []string
	for _, d := range dbs {
		served = append(served, d.Name)
	}
	tl, err := tunnel.Listen(tunnel.Options{Addrs: cfg.DBService.ProxyAddrs, HostID: s.HostID, Databases: served,
		TLS: &tls.Config{Certificates: []tls.Certificate{auth.host}, RootCAs: roots, MinVersion: tls.VersionTLS13},
		Log: log.With("component", "tunnel")})
	if err != nil {
		return nil, fmt.Errorf("db_service.proxy_addrs: %w", err)
	}
	s.Tunnels = tl
	// The other proxies are learned from presence: an agent given one
	// proxy keeps a tunnel to every one.
	if kv, err := presence.Open(ctx, js); err != nil {
		log.Warn("agent: proxies not learned from presence: tunnels only to db_service.proxy_addrs", "err", err)
	} else if pv, err := presence.Watch(ctx, kv); err != nil {
		log.Warn("agent: proxies not learned from presence: tunnels only to db_service.proxy_addrs", "err", err)
	} else {
		go learnProxies(ctx, pv, tl)
	}
	return []net.Listener{tl}, nil
}

// openPorts opens the ports engines serve of their own (agent.PortServer);
// on an error it returns those already opened, for the caller to close.
func (s *Service) openPorts(engines map[string]agent.Engine) ([]net.Listener, error) {
	var lns []net.Listener
	for _, name := range agent.EngineNames() {
		ps, ok := engines[name].(agent.PortServer)
		if !ok {
			continue
		}
		ln, err := ps.OpenPort(s.Server)
		if err != nil {
			return lns, err
		}
		if ln != nil {
			lns = append(lns, ln)
			s.Ports[name] = ln.Addr().String()
		}
	}
	return lns, nil
}

// buildEngines builds every engine registered in this program that the
// agent can run, each with the databases of dbs it serves, and maps every
// protocol to the engine serving it (CockroachDB's is PostgreSQL's: one
// engine holds the cancel keys of both). An engine that needs the data
// dir's certificate authorities is left out without them; Start has
// refused its databases by then.
func buildEngines(ctx context.Context, dbs []config.Database, base agent.EngineParams) (byName, byProtocol map[string]agent.Engine, err error) {
	byName, byProtocol = map[string]agent.Engine{}, map[string]agent.Engine{}
	for _, name := range agent.EngineNames() {
		if r, _ := agent.LookupEngine(name); r.LocalCAs != "" && base.CAs == nil {
			continue
		}
		p := base
		p.Databases = nil
		for _, d := range dbs {
			if protocol.EngineOf(d.Protocol) == name {
				p.Databases = append(p.Databases, d)
			}
		}
		e, err := agent.NewEngine(ctx, name, p)
		if err != nil {
			return nil, nil, err
		}
		byName[name] = e
		for _, pr := range protocol.All() {
			if pr.Engine == name {
				byProtocol[pr.Name] = e
			}
		}
	}
	return byName, byProtocol, nil
}

// learnProxies hands the tunnels every proxy presence names, again at
// each change and as leases run out, until ctx ends.
func learnProxies(ctx context.Context, v *presence.View, tl *tunnel.Listener) {
	t := time.NewTicker(presence.DefaultLease / 3)
	defer t.Stop()
	for {
		changed := v.Changed()
		var peers []tunnel.Peer
		for _, p := range v.Proxies() {
			peers = append(peers, tunnel.Peer{ID: p.ID, Addr: p.Addr})
		}
		tl.Learn(peers)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
	}
}

// Wait blocks until the agent stopped and returns why (nil after ctx of
// Start ended).
func (s *Service) Wait() error { return <-s.done }

// brokerInProcess reports whether the broker role runs in this process,
// with the certificate authorities in the same data dir.
func brokerInProcess(c *config.Config) bool {
	return c.Broker.Enabled == nil || *c.Broker.Enabled
}

// errRemoteJoin says what an agent without a broker in its process needs.
func errRemoteJoin(c *config.Config) error {
	return errors.New("db_service: broker.enabled is false, so the agent joins a broker elsewhere: set db_service.broker_addr (the broker's proxy address) or db_service.proxy_addrs, db_service.join_token and db_service.broker_ca_pin (`tollgate tokens add --type=db` prints them), or run the agent in the broker's process (leave broker.enabled unset or true) on the data dir holding the CAs")
}

// registrar registers the agent's databases and keeps them alive:
// registrations through register, heartbeats straight into DB_HEARTBEATS.
type registrar struct {
	state     *state.Projection
	register  func(ctx context.Context, d state.NewDatabase) error
	heartbeat func(ctx context.Context, by state.Actor, name, hostID string) error
	hostID    string
	addr      string
	ttl       time.Duration
	dbs       []state.NewDatabase
	log       *slog.Logger
}

func (r *registrar) registerAll(ctx context.Context) error {
	for _, d := range r.dbs {
		if err := r.register(ctx, d); err != nil {
			return fmt.Errorf("agent service: register database %s: %w", d.Name, err)
		}
	}
	return nil
}

// apiRegister registers a database through the broker's API, which takes
// the host id from the host certificate the client presents.
func apiRegister(c *api.Client) func(ctx context.Context, d state.NewDatabase) error {
	return func(ctx context.Context, d state.NewDatabase) error {
		_, err := c.AgentRegister(ctx, api.RegisterRequest{Databases: []api.RegisterDatabase{{Name: d.Name, Protocol: d.Protocol,
			URI: d.URI, Labels: d.Labels, AgentAddr: d.AgentAddr, HeartbeatTTL: api.Duration(d.HeartbeatTTL)}}})
		return err
	}
}

// beat sends a heartbeat for every database each third of the TTL until
// ctx ends. A database deleted meanwhile (tollgate db rm) is registered
// again, since this agent still serves it; a failed beat is logged and
// retried at the next tick, and the database expires if the store stays
// unreachable.
func (r *registrar) beat(ctx context.Context) {
	t := time.NewTicker(r.ttl / 3)
	defer t.Stop()
	by := state.Actor{User: "host:" + r.hostID}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, d := range r.dbs {
			bctx, cancel := context.WithTimeout(ctx, r.ttl/3)
			cur, ok := r.state.Database(d.Name)
			var err error
			if !ok || cur.HostID != r.hostID || cur.AgentAddr != r.addr {
				err = r.register(bctx, d)
			} else {
				err = r.heartbeat(bctx, by, d.Name, r.hostID)
			}
			cancel()
			if err != nil && ctx.Err() == nil {
				r.log.Warn("agent: heartbeat failed", "database", d.Name, "err", err)
			}
		}
	}
}

// loadHostID returns the agent's host id, kept in <data_dir>/agent/host_id
// so that restarts register the same host: the machine's name and a random
// suffix that keeps two agents on one machine apart.
func loadHostID(dataDir string) (string, error) {
	dir := filepath.Join(dataDir, "agent")
	path := filepath.Join(dir, "host_id")
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("agent service: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("agent service: %w", err)
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "agent"
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	id := host + "-" + hex.EncodeToString(suffix[:])
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("agent service: %w", err)
	}
	return id, nil
}

// publicAddr is the configured public address, with an unspecified host
// replaced by this machine's name and a zero port by the one listened on.
func publicAddr(public, listen string) (string, error) {
	if public == "" {
		public = listen
	}
	host, port, err := net.SplitHostPort(public)
	if err != nil {
		return "", fmt.Errorf("db_service.public_addr %q: %w", public, err)
	}
	_, lport, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	if port == "" || port == "0" {
		port = lport
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		if host, err = os.Hostname(); err != nil {
			return "", fmt.Errorf("db_service.public_addr %q names no host and the machine's name is unknown: %w", public, err)
		}
	}
	return net.JoinHostPort(host, port), nil
}

// withDBCA returns the databases with tls.ca_cert_file defaulting to the
// cluster's db CA (which signs what `tollgate auth sign --format=db` and
// `--format=cockroachdb` write), stored in dir for agent.NewDatabase to
// read. A database that sets its own CA file, trusts the system pool, or
// is not verified keeps its setting.
func withDBCA(in []config.Database, dbCAPEM []byte, dir string) ([]config.Database, error) {
	out := make([]config.Database, len(in))
	copy(out, in)
	var caFile string
	for i := range out {
		d := &out[i]
		if d.TLS.CACertFile != "" || d.TLS.TrustSystemCertPool || d.TLS.Mode == "insecure" {
			continue
		}
		if caFile == "" {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, fmt.Errorf("agent service: %w", err)
			}
			caFile = filepath.Join(dir, "db-ca.crt")
			if err := os.WriteFile(caFile, dbCAPEM, 0o644); err != nil {
				return nil, fmt.Errorf("agent service: %w", err)
			}
		}
		d.TLS.CACertFile = caFile
	}
	return out, nil
}

// hostNames are the names the agent's certificate is valid for: every
// database (clients verify the agent under the database name they send as
// SNI), the hosts of the public and listen addresses, and loopback.
func hostNames(dbs []config.Database, addrs ...string) []string {
	var names []string
	seen := map[string]bool{}
	add := func(n string) {
		if n == "" || n == "0.0.0.0" || n == "::" || seen[n] {
			return
		}
		seen[n] = true
		names = append(names, n)
	}
	for _, d := range dbs {
		add(d.Name)
	}
	for _, a := range addrs {
		if h, _, err := net.SplitHostPort(a); err == nil {
			add(h)
		}
	}
	for _, n := range []string{"localhost", "127.0.0.1", "::1"} {
		add(n)
	}
	return names
}

// hostCertificate issues the agent's certificate with a fresh key at every
// start, so the key never touches the disk; the host CA follows the leaf.
func hostCertificate(cas *ca.Authorities, hostID string, names []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, _, err := cas.IssueHost(key.Public(), hostID, names, 0)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("agent service: host certificate: %w", err)
	}
	hostCA, err := cas.Cert(ca.Host)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, hostCA.Raw}, PrivateKey: key, Leaf: leaf}, nil
}
