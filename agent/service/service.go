// Package service runs the agent as a long-lived service: it gets the
// agent's credentials from the cluster's certificate authorities, registers
// its databases in STATE (through the broker's API when it joined from
// another machine) with heartbeats, and serves agent.Server on
// db_service.listen. `tollgate start` runs it as the agent role.
//
// Clients reach a database by dialing the agent's public address (the
// database record in STATE carries it as AgentAddr) with TLS server name
// (SNI) equal to the database name, presenting a user certificate; see
// ServerName.
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
	"github.com/tollgate-db/tollgate/agent/mysql"
	"github.com/tollgate-db/tollgate/agent/postgres"
	"github.com/tollgate-db/tollgate/agent/sqlserver"
	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
)

// ServerName is the TLS server name (SNI) a client sends to reach database
// name through an agent: the name itself. agent.Server routes on it (and
// on the first label of a longer name), and the agent's certificate lists
// every database it serves as a DNS name, so a client verifies the agent
// with the database name as the expected host.
func ServerName(database string) string { return database }

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
	// Engine options of the PostgreSQL engine (postgres and cockroachdb).
	Postgres postgres.Options
	// Engine options of the MySQL/MariaDB engine.
	MySQL mysql.Options
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
	// MySQLAddr is where MySQL clients connect without tg
	// (db_service.mysql_listen); empty when not configured.
	MySQLAddr string
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
	cfg := o.Config
	if cfg == nil || o.JS == nil || o.Recorder == nil {
		return nil, errors.New("agent service: Config, JS and Recorder are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.HeartbeatTTL <= 0 {
		o.HeartbeatTTL = DefaultHeartbeatTTL
	}
	if o.Postgres.Logger == nil {
		o.Postgres.Logger = o.Log
	}
	if len(cfg.DBService.Databases) == 0 {
		return nil, errors.New("db_service: no databases configured (db_service.databases)")
	}
	local := brokerInProcess(cfg)
	if !local {
		for i, d := range cfg.DBService.Databases {
			if d.Protocol == "sqlserver" {
				return nil, fmt.Errorf("db_service.databases[%d] (%s): SQL Server needs the broker in the agent's process for now: its Kerberos PKINIT certificates are signed with the CAs of the data dir", i, d.Name)
			}
		}
	}
	hostID, err := loadHostID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	// An agent that tunnels to proxies listens only when db_service.listen
	// says so.
	var lns []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
		}
	}()
	ln := o.Listener
	if ln == nil && cfg.DBService.Listen != "" {
		if ln, err = net.Listen("tcp", cfg.DBService.Listen); err != nil {
			return nil, fmt.Errorf("db_service.listen: %w", err)
		}
	}
	if ln == nil && len(cfg.DBService.ProxyAddrs) == 0 {
		return nil, errors.New("db_service: neither listen nor proxy_addrs is set: clients could not reach the agent")
	}
	s = &Service{HostID: hostID, log: o.Log, done: make(chan error, 1)}
	var names []string
	if ln != nil {
		lns = append(lns, ln)
		s.Addr = ln.Addr().String()
		if s.PublicAddr, err = publicAddr(cfg.DBService.PublicAddr, s.Addr); err != nil {
			return nil, err
		}
		names = hostNames(cfg.DBService.Databases, s.PublicAddr, s.Addr)
	} else {
		// Clients reach a tunneled agent through a proxy, with the
		// database as SNI. The proxy's host is not put in the agent's
		// certificate: that would let the agent pass for the proxy.
		s.PublicAddr = cfg.DBService.PublicAddr
		if s.PublicAddr == "" {
			s.PublicAddr = cfg.DBService.ProxyAddrs[0]
		}
		names = hostNames(cfg.DBService.Databases)
	}
	var auth *authorities
	if local {
		auth, err = localAuthorities(cfg.DataDir, hostID, names)
	} else {
		auth, err = joinedAuthorities(ctx, cfg, hostID, names)
	}
	if err != nil {
		return nil, err
	}
	s.HostCA = auth.hostCA
	// The agent signs its frames and seals its sessions with its host key:
	// `audit verify` trusts what the host CA certified.
	if sp, ok := o.Recorder.(interface{ SetSigner(*events.Signer) }); ok {
		key, _ := auth.host.PrivateKey.(crypto.Signer)
		signer, err := events.NewSigner(key, auth.host.Leaf)
		if err != nil {
			return nil, fmt.Errorf("agent service: signing key: %w", err)
		}
		sp.SetSigner(signer)
	}
	dbs, err := withDBCA(cfg.DBService.Databases, auth.dbCAPEM, filepath.Join(cfg.DataDir, "agent"))
	if err != nil {
		return nil, err
	}
	// The agent reads STATE and writes only heartbeats, unless it is to
	// register beside the broker with the broker's store on JS.
	var (
		store    *state.Projection
		beat     func(ctx context.Context, by state.Actor, name, hostID string) error
		register = o.Register
	)
	if auth.broker == nil && register == nil {
		if s.Store, err = state.Open(ctx, o.JS, cfg.ClusterName); err != nil {
			return nil, fmt.Errorf("agent service: %w", err)
		}
		st := s.Store
		store, beat = st.Projection, st.Heartbeat
		register = func(ctx context.Context, d state.NewDatabase) error {
			_, err := st.RegisterDatabase(ctx, state.Actor{User: "host:" + hostID}, d)
			return err
		}
	} else {
		if store, err = state.Follow(ctx, o.JS); err != nil {
			return nil, fmt.Errorf("agent service: %w", err)
		}
		b, berr := state.NewBeater(ctx, o.JS, store, cfg.ClusterName)
		if berr != nil {
			store.Close()
			return nil, fmt.Errorf("agent service: %w", berr)
		}
		beat = b.Beat
		if auth.broker != nil {
			register = apiRegister(auth.broker)
		}
	}
	// s is nil once an error is returned.
	defer func() {
		if err != nil {
			store.Close()
		}
	}()
	// Locks, certificate and grant ends and idleness end live sessions.
	life := agent.NewLifecycle(store, agent.LifecycleOptions{Logger: o.Log})
	// Databases behind RDS Proxy get an IAM token as their password.
	iam := awsiam.NewRegistry(awsiam.Options{})
	if o.Postgres.Password == nil {
		o.Postgres.Password = iam.Token
	}
	if o.MySQL.Password == nil {
		o.MySQL.Password = iam.Token
	}
	pg := postgres.New(o.Postgres)
	my := mysql.New(o.MySQL)
	engines := map[string]agent.Engine{"postgres": pg, "cockroachdb": pg, "mysql": my}
	if auth.local != nil {
		ms, err := sqlserver.NewStandard(ctx, auth.local, filepath.Join(cfg.DataDir, "agent", "krb5"), auth.host, o.Log)
		if err != nil {
			return nil, err
		}
		engines["sqlserver"] = ms
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
		// CockroachDB speaks the PostgreSQL protocol; one engine holds the
		// cancel keys of both.
		Engines:   engines,
		Logger:    o.Log,
		Lifecycle: life,
		// db_service connection limits, refused in the protocol's form.
		MaxConnections:        cfg.DBService.MaxConnections,
		MaxConnectionsPerUser: cfg.DBService.MaxConnectionsPerUser,
	})
	if err != nil {
		return nil, err
	}
	if len(cfg.DBService.ProxyAddrs) > 0 {
		roots := x509.NewCertPool()
		roots.AddCert(auth.hostCA)
		var served []string
		for _, d := range dbs {
			served = append(served, d.Name)
		}
		tl, terr := tunnel.Listen(tunnel.Options{Addrs: cfg.DBService.ProxyAddrs, HostID: hostID, Databases: served,
			TLS: &tls.Config{Certificates: []tls.Certificate{auth.host}, RootCAs: roots, MinVersion: tls.VersionTLS13},
			Log: o.Log.With("component", "tunnel")})
		if terr != nil {
			return nil, fmt.Errorf("db_service.proxy_addrs: %w", terr)
		}
		lns = append(lns, tl)
		s.Tunnels = tl
		// The other proxies are learned from presence: an agent given
		// one proxy keeps a tunnel to every one.
		if kv, perr := presence.Open(ctx, o.JS); perr != nil {
			o.Log.Warn("agent: proxies not learned from presence: tunnels only to db_service.proxy_addrs", "err", perr)
		} else if pv, perr := presence.Watch(ctx, kv); perr != nil {
			o.Log.Warn("agent: proxies not learned from presence: tunnels only to db_service.proxy_addrs", "err", perr)
		} else {
			go learnProxies(ctx, pv, tl)
		}
	}
	if a := cfg.DBService.MySQLListen; a != "" {
		mln, lerr := net.Listen("tcp", a)
		if lerr != nil {
			return nil, fmt.Errorf("db_service.mysql_listen: %w", lerr)
		}
		defer func() {
			if err != nil {
				mln.Close()
			}
		}()
		s.MySQLAddr = mln.Addr().String()
		lo := mysql.ListenerOptions{Cluster: cfg.ClusterName, Recorder: o.Recorder}
		var only []*agent.Database
		for _, d := range dbs {
			if d.Protocol == "mysql" {
				db, _ := s.Server.Database(d.Name)
				only = append(only, db)
			}
		}
		if len(only) == 1 {
			lo.Database = only[0]
		}
		lns = append(lns, my.Listener(mln, lo))
	}
	reg := &registrar{state: store, register: register, heartbeat: beat, hostID: hostID, addr: s.PublicAddr, ttl: o.HeartbeatTTL, log: o.Log}
	for _, d := range dbs {
		reg.dbs = append(reg.dbs, state.NewDatabase{Name: d.Name, Protocol: d.Protocol, URI: d.URI,
			Labels: d.StaticLabels, HostID: hostID, AgentAddr: s.PublicAddr, HeartbeatTTL: o.HeartbeatTTL})
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
	o.Log.Info("agent listening", "addr", s.Addr, "proxy_addrs", cfg.DBService.ProxyAddrs, "public_addr", s.PublicAddr, "mysql_addr", s.MySQLAddr, "host_id", hostID,
		"databases", len(dbs), "heartbeat_ttl", o.HeartbeatTTL)
	return s, nil
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
