package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/agent/service"
	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// startDeps is what `tollgate start` hands every role: the configuration,
// the logger, a NATS connection per event-plane identity (As) and the
// audit publisher.
type startDeps struct {
	Config *config.Config
	Log    *slog.Logger
	// NATS is the embedded server, nil when nats.urls names external ones.
	NATS      *natsserver.Server
	Publisher *events.Publisher

	mu sync.Mutex
	// store is the broker's state store, shared by the roles that write
	// STATE (broker, the agent's registrations beside it, demo); storeReady
	// is closed once it is set or the broker role failed to open it.
	store      *state.Store
	storeErr   error
	storeReady chan struct{}
	storeOnce  sync.Once
	// shared is the one connection of an external cluster reached with a
	// single credential (no nats.credentials_dir): every part uses it.
	shared *nats.Conn
	conns  map[natsserver.Part]*nats.Conn
	// starting are the roles that said they would tell when they serve
	// (startRole.SignalsReady) and have not yet: /readyz waits for them.
	starting map[string]bool
	// viaProxy: shared reaches the event plane through a proxy, where
	// every connection is the agent part.
	viaProxy bool
}

// Ready marks role as serving (its listeners open, its state loaded).
func (d *startDeps) Ready(role string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.starting, role)
}

// Starting lists the roles not yet serving, sorted.
func (d *startDeps) Starting() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.starting))
	for r := range d.starting {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// eventsViaProxy says whether the process is an agent that reaches the
// event plane through its proxies: no broker beside it, no nats.urls, no
// leaf node, and db_service.proxy_addrs set.
func eventsViaProxy(c *config.Config) bool {
	return !brokerEnabled(c) && len(c.NATS.URLs) == 0 && c.NATS.Leaf == nil && len(c.DBService.ProxyAddrs) > 0
}

// As is the connection and JetStream of part p. Each part connects with its
// own identity, so the NATS server holds it to its own job; only an
// external cluster configured with one credential is shared by all.
func (d *startDeps) As(p natsserver.Part) (*nats.Conn, jetstream.JetStream, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	nc := d.shared
	if nc == nil {
		nc = d.conns[p]
	}
	if nc == nil {
		var err error
		if d.NATS != nil {
			nc, err = d.NATS.ConnectAs(p)
		} else {
			nc, err = natsserver.Connect(d.Config.NATS, p)
		}
		if err != nil {
			return nil, nil, err
		}
		if d.conns == nil {
			d.conns = map[natsserver.Part]*nats.Conn{}
		}
		d.conns[p] = nc
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	return nc, js, nil
}

// setBrokerStore hands the broker role's store (or why it has none) to
// the roles waiting in BrokerStore.
func (d *startDeps) setBrokerStore(s *state.Store, err error) {
	d.storeOnce.Do(func() {
		d.store, d.storeErr = s, err
		close(d.storeReady)
	})
}

// BrokerStore is the broker's state store: the broker role's when it runs
// in this process, else one opened with the broker's identity (a process
// beside the broker's data dir holds its seed).
func (d *startDeps) BrokerStore(ctx context.Context) (*state.Store, error) {
	if !roleSelectedByName("broker", d.Config) {
		d.storeOnce.Do(func() {
			defer close(d.storeReady)
			_, js, err := d.As(natsserver.Broker)
			if err != nil {
				d.storeErr = err
				return
			}
			d.store, d.storeErr = state.Open(ctx, js, d.Config.ClusterName)
			if d.storeErr == nil {
				go func() { <-ctx.Done(); d.store.Close() }()
			}
		})
	}
	select {
	case <-d.storeReady:
		return d.store, d.storeErr
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// closeConns closes the connections As made (the embedded server drains
// its own when it shuts down).
func (d *startDeps) closeConns() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, nc := range d.conns {
		nc.Close()
	}
	if d.shared != nil {
		d.shared.Close()
	}
}

// perPart says whether each part has an identity of its own.
func (d *startDeps) perPart() bool { return d.NATS != nil || d.Config.NATS.CredentialsDir != "" }

// startRole is one part of the daemon (broker, agent, exporters, …). Run
// blocks until ctx ends and then returns nil, or returns an error that
// stops the whole process.
type startRole struct {
	Name string
	// Enabled says whether the configuration asks for the role; nil means
	// always.
	Enabled func(*config.Config) bool
	Run     func(ctx context.Context, d *startDeps) error
	// SignalsReady says the role calls d.Ready(Name) once it serves;
	// until then the process is not ready (--health-listen's /readyz).
	SignalsReady bool
}

var startRoles []startRole

// addStartRole registers a role; call it from an init function in the
// role's own file.
func addStartRole(r startRole) { startRoles = append(startRoles, r) }

// shutdownTimeout bounds the clean shutdown: roles returning, the
// publisher storing what it holds, the server stopping.
const shutdownTimeout = 15 * time.Second

func init() {
	start := &cobra.Command{
		Use:   "start",
		Short: "Run every role the configuration enables, with an embedded NATS server unless nats.urls is set",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := startConfig(flagConfig, flagDataDir)
			if err != nil {
				return err
			}
			log, err := newLogger(cfg.Log, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if err := checkRoles(flagRoles); err != nil {
				return err
			}
			if flagCheck {
				return checkStart(cmd.OutOrStdout(), cfg)
			}
			tuneGC()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runStart(ctx, cfg, log)
		},
	}
	start.Flags().StringSliceVar(&flagRoles, "roles", nil,
		"run only these roles (e.g. --roles=exporter), even one the configuration does not enable")
	start.Flags().StringVar(&flagMetricsListen, "metrics-listen", "",
		"serve the exporters' Prometheus metrics at http://ADDR/metrics")
	start.Flags().StringVar(&flagHealthListen, "health-listen", "",
		"answer probes at http://ADDR/healthz (the process runs) and /readyz (the roles serve, AUDIT sound)")
	start.Flags().BoolVar(&flagCheck, "check", false,
		"validate the configuration for the roles that would run, print them and exit; opens no file it names and connects to nothing")
	root.AddCommand(start)
}

// startConfig loads the file (or the defaults) and applies --data-dir.
func startConfig(file, dataDir string) (*config.Config, error) {
	cfg := config.Default()
	if file != "" {
		var err error
		if cfg, err = config.Load(file); err != nil {
			return nil, err
		}
	}
	// config.Load resolves a relative data_dir against the file's folder
	// but leaves a relative store_dir (also the one derived from data_dir)
	// relative to the working directory; resolve it the same way.
	if sd := cfg.NATS.Embedded.StoreDir; sd != "" && !filepath.IsAbs(sd) && cfg.Path() != "" {
		cfg.NATS.Embedded.StoreDir = filepath.Join(filepath.Dir(cfg.Path()), sd)
	}
	if dataDir != "" {
		// A store dir that was only derived from the data dir follows it.
		if cfg.NATS.Embedded.StoreDir == filepath.Join(cfg.DataDir, "nats") {
			cfg.NATS.Embedded.StoreDir = filepath.Join(dataDir, "nats")
		}
		cfg.DataDir = dataDir
	}
	if cfg.DataDir == "" {
		return nil, errors.New("data_dir is empty")
	}
	return cfg, nil
}

// newLogger writes text (default) or JSON lines to w.
func newLogger(c config.Log, w interface{ Write([]byte) (int, error) }) (*slog.Logger, error) {
	var level slog.Level
	switch strings.ToLower(c.Level) {
	case "", "info":
		level = slog.LevelInfo
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		return nil, fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Level)
	}
	ho := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.Format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("log.format: %q is not text or json", c.Format)
}

// runStart brings up NATS, the streams and the publisher, runs the enabled
// roles until ctx ends or one fails, then shuts everything down in reverse.
func runStart(ctx context.Context, cfg *config.Config, log *slog.Logger) (err error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := checkListenAddrs(startListenAddrs(cfg), cfg.Path()); err != nil {
		return err
	}
	d := &startDeps{Config: cfg, Log: log, storeReady: make(chan struct{})}
	var hc *health
	if flagHealthListen != "" {
		var stop func()
		if hc, stop, err = serveHealth(flagHealthListen, startListenAddrs(cfg)); err != nil {
			return err
		}
		defer stop()
	}

	if eventsViaProxy(cfg) {
		// An agent behind NAT reaches the event plane through the proxy's
		// port, as the agent part, with its host certificate: it joins
		// first if it has not yet.
		tc, err := service.HostTLS(ctx, cfg)
		if err != nil {
			return err
		}
		d.viaProxy = true
		// HTTPS_PROXY applies as to the tunnels.
		if d.shared, err = natsserver.ConnectViaProxy(cfg.DBService.ProxyAddrs, tc, tunnel.Dial); err != nil {
			return err
		}
		defer d.closeConns()
		log.Info("nats connected through the proxy", "proxies", cfg.DBService.ProxyAddrs)
	} else if eventsViaBroker(cfg) {
		// A proxy without the broker reaches the event plane through the
		// broker's port with its proxy certificate, which the broker's
		// proxy signs in as the proxy part; it joins first if it has not.
		cert, hostCA, err := proxyCertificate(ctx, cfg)
		if err != nil {
			return err
		}
		roots := x509.NewCertPool()
		roots.AddCert(hostCA)
		tc := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: roots}
		d.viaProxy = true
		if d.shared, err = natsserver.ConnectViaProxy([]string{cfg.Proxy.BrokerAddr}, tc, nil,
			nats.Name("tollgate-proxy"), nats.CustomInboxPrefix(natsserver.Proxy.InboxPrefix())); err != nil {
			return err
		}
		defer d.closeConns()
		log.Info("nats connected through the broker's port", "broker", cfg.Proxy.BrokerAddr)
	} else if len(cfg.NATS.URLs) == 0 {
		o, err := natsserver.FromConfig(cfg)
		if err != nil {
			return err
		}
		o.Logger = log
		if !log.Enabled(ctx, slog.LevelDebug) {
			// The server's notices are many and rarely useful at info.
			o.Logger = slog.New(discardAbove{log.Handler(), slog.LevelWarn})
		}
		if d.NATS, err = natsserver.Start(o); err != nil {
			return err
		}
		defer func() {
			d.NATS.Shutdown()
			log.Info("nats stopped")
		}()
		where := d.NATS.ClientURL()
		if where == "" {
			where = "in-process only"
		}
		log.Info("nats listening", "client_url", where, "store_dir", o.StoreDir, "credentials_dir", o.Auth.Dir, "tls", o.TLS != nil)
	} else {
		defer d.closeConns()
		if cfg.NATS.CredentialsDir == "" {
			if d.shared, err = natsserver.Connect(cfg.NATS, natsserver.Broker); err != nil {
				return err
			}
			log.Warn("nats: one credential for every part (set nats.credentials_dir to give each its own identity)", "server", d.shared.ConnectedUrlRedacted())
		}
		log.Info("nats connected", "urls", len(cfg.NATS.URLs), "credentials_dir", cfg.NATS.CredentialsDir)
	}

	so := events.StreamOptions{
		Replicas:      cfg.NATS.Replicas,
		AuditMaxAge:   cfg.NATS.AuditMaxAge.Std(),
		AuditMaxBytes: cfg.NATS.AuditMaxBytes,
	}
	if err := ensureStreams(ctx, d, so); err != nil {
		return err
	}

	// The publisher stores audit events: the agent's job, or the broker's
	// in a process without an agent.
	pubPart := natsserver.Broker
	if roleSelectedByName("agent", cfg) {
		pubPart = natsserver.Agent
	} else if proxyOnly(cfg) {
		pubPart = natsserver.Proxy
	}
	_, pubJS, err := d.As(pubPart)
	if err != nil {
		return err
	}
	mode, err := events.ParseMode(cfg.Audit.Mode)
	if err != nil {
		return err
	}
	d.Publisher, err = events.NewPublisher(pubJS, cfg.ClusterName,
		events.WithMode(mode),
		events.WithAckTimeout(cfg.Audit.AckTimeout.Std()),
		events.WithQueueSize(cfg.Audit.QueueSize),
		events.WithLogger(log.With("component", "audit")))
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if cerr := d.Publisher.Close(cctx); cerr != nil {
			err = errors.Join(err, cerr)
		}
		st := d.Publisher.Stats()
		log.Info("audit publisher closed", "acked", st.Acked, "retried", st.Retried, "blocked", st.Blocked)
	}()

	// While AUDIT is missing or weaker than configured, strict statements
	// are refused with what changed; the broker stores the alert.
	guard, err := events.GuardPublisher(ctx, pubJS, d.Publisher, so)
	if err != nil {
		return err
	}
	defer guard.Stop()
	if f := guard.Fault(); f != nil {
		log.Error("the AUDIT stream is not what it must be: strict statements are refused until it is restored", "fault", f.Error())
	}
	if hc != nil {
		fault := guard.Fault
		hc.fault.Store(&fault)
		hc.starting.Store(&startingFunc{d.Starting})
	}

	err = runRoles(ctx, d, hc)
	log.Info("shutting down", "cause", context.Cause(ctx))
	return err
}

// ensureStreams creates or updates the streams when this process may (it
// runs the embedded server, or the broker, or holds one credential shared
// by every part); otherwise it waits until a broker has made them.
func ensureStreams(ctx context.Context, d *startDeps, so events.StreamOptions) error {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !d.viaProxy && (d.NATS != nil || !d.perPart() || roleSelectedByName("broker", d.Config)) {
		_, js, err := d.As(natsserver.Broker)
		if err != nil {
			return err
		}
		if err := events.EnsureStreams(sctx, js, so); err != nil {
			return err
		}
		// The buckets beside STATE too, before parts that only read them.
		if _, _, _, err := state.EnsureBuckets(sctx, js); err != nil {
			return err
		}
		if _, err := presence.Ensure(sctx, js, so.Replicas); err != nil {
			return err
		}
		d.Log.Info("streams ready", "streams", []string{events.AuditStream, events.StateStream}, "object_store", events.LargeFieldsBucket,
			"replicas", so.Replicas, "audit_max_age", so.AuditMaxAge, "audit_max_bytes", so.AuditMaxBytes)
		return nil
	}
	// A proxy's own identity may see that the streams exist; it holds
	// no auditor's seed.
	waitPart := natsserver.Auditor
	if proxyOnly(d.Config) {
		waitPart = natsserver.Proxy
	}
	_, js, err := d.As(waitPart)
	if err != nil {
		return err
	}
	for {
		_, aerr := js.Stream(sctx, events.AuditStream)
		_, serr := js.Stream(sctx, events.StateStream)
		if aerr == nil && serr == nil {
			return nil
		}
		select {
		case <-sctx.Done():
			return fmt.Errorf("streams %s and %s not made by a broker within 30s (%v; %v)", events.AuditStream, events.StateStream, aerr, serr)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// runRoles runs every enabled role in its own goroutine. The first to fail
// ends the others; all have returned when runRoles does.
func runRoles(ctx context.Context, d *startDeps, hc *health) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		names []string
	)
	d.mu.Lock()
	d.starting = map[string]bool{}
	for _, r := range startRoles {
		if r.SignalsReady && roleSelected(r, d.Config) {
			d.starting[r.Name] = true
		}
	}
	d.mu.Unlock()
	for _, r := range startRoles {
		if !roleSelected(r, d.Config) {
			continue
		}
		names = append(names, r.Name)
		wg.Go(func() {
			err := r.Run(ctx, d)
			if err == nil && ctx.Err() == nil {
				err = errors.New("returned before shutdown")
			}
			if err != nil {
				err = fmt.Errorf("%s: %w", r.Name, err)
				once.Do(func() { first = err })
				cancel(err)
			}
		})
	}
	if hc != nil {
		hc.started.Store(true)
	}
	d.Log.Info("tollgate started", "cluster", d.Config.ClusterName, "data_dir", d.Config.DataDir, "roles", names, "audit_mode", d.Publisher.Mode())
	<-ctx.Done()
	wg.Wait()
	return first
}

// discardAbove passes records at or above min to h.
type discardAbove struct {
	slog.Handler
	min slog.Level
}

func (h discardAbove) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h discardAbove) WithAttrs(a []slog.Attr) slog.Handler {
	return discardAbove{h.Handler.WithAttrs(a), h.min}
}

func (h discardAbove) WithGroup(n string) slog.Handler {
	return discardAbove{h.Handler.WithGroup(n), h.min}
}

var (
	// flagRoles, when set, names the only roles `tollgate start` runs.
	flagRoles []string
	// flagMetricsListen is where the exporters serve Prometheus metrics.
	flagMetricsListen string
)

// checkRoles says which names given to --roles are not roles.
func checkRoles(names []string) error {
	known := make([]string, 0, len(startRoles))
	for _, r := range startRoles {
		known = append(known, r.Name)
	}
	for _, n := range names {
		if !slices.Contains(known, n) {
			return fmt.Errorf("--roles: %q is not a role (want some of %s)", n, strings.Join(known, ", "))
		}
	}
	return nil
}

// roleSelectedByName says whether the role called name runs.
func roleSelectedByName(name string, c *config.Config) bool {
	for _, r := range startRoles {
		if r.Name == name {
			return roleSelected(r, c)
		}
	}
	return false
}

// roleSelected says whether r runs: the roles of --roles when it is given,
// else those the configuration enables.
func roleSelected(r startRole, c *config.Config) bool {
	if len(flagRoles) > 0 {
		return slices.Contains(flagRoles, r.Name)
	}
	return r.Enabled == nil || r.Enabled(c)
}

// tuneGC collects garbage less often unless GOGC is set. The live heap is
// small and every audit event allocates a little in the engine, the
// publisher and the embedded server: the garbage collector took 15% of the
// agent's CPU under pgbench, and collecting less often cut the CPU per
// event by a tenth (BenchmarkPublishAsync with GOGC=400). The cost is a
// larger heap, so unless GOMEMLIMIT is set a soft limit of three quarters
// of the container's memory (cgroup v2 memory.max) makes the collector run
// sooner before the heap could approach it.
func tuneGC() {
	if os.Getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(400)
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 {
			debug.SetMemoryLimit(n / 4 * 3)
		}
	}
}
