package main

import (
	"context"
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

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// startDeps is what `tollgate start` hands every role: the configuration,
// the logger, the NATS connection with JetStream and the audit publisher.
type startDeps struct {
	Config *config.Config
	Log    *slog.Logger
	// NATS is the embedded server, nil when nats.urls names external ones.
	NATS      *natsserver.Server
	Conn      *nats.Conn
	JS        jetstream.JetStream
	Publisher *events.Publisher
}

// startRole is one part of the daemon (broker, agent, exporters, …). Run
// blocks until ctx ends and then returns nil, or returns an error that
// stops the whole process.
type startRole struct {
	Name string
	// Enabled says whether the configuration asks for the role; nil means
	// always.
	Enabled func(*config.Config) bool
	Run     func(ctx context.Context, d *startDeps) error
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
	d := &startDeps{Config: cfg, Log: log}

	if len(cfg.NATS.URLs) == 0 {
		o := natsserver.FromConfig(cfg)
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
		if d.Conn, err = d.NATS.Connect(); err != nil {
			return err
		}
		where := d.NATS.ClientURL()
		if where == "" {
			where = "in-process only"
		}
		log.Info("nats listening", "client_url", where, "store_dir", o.StoreDir, "max_payload", d.Conn.MaxPayload())
	} else {
		if d.Conn, err = natsserver.Connect(cfg.NATS); err != nil {
			return err
		}
		defer d.Conn.Close()
		log.Info("nats connected", "server", d.Conn.ConnectedUrlRedacted(), "urls", len(cfg.NATS.URLs))
	}
	if d.JS, err = jetstream.New(d.Conn); err != nil {
		return err
	}

	so := events.StreamOptions{
		Replicas:      cfg.NATS.Replicas,
		AuditMaxAge:   cfg.NATS.AuditMaxAge.Std(),
		AuditMaxBytes: cfg.NATS.AuditMaxBytes,
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = events.EnsureStreams(sctx, d.JS, so)
	cancel()
	if err != nil {
		return err
	}
	log.Info("streams ready", "streams", []string{events.AuditStream, events.StateStream}, "object_store", events.LargeFieldsBucket,
		"replicas", cfg.NATS.Replicas, "audit_max_age", so.AuditMaxAge, "audit_max_bytes", so.AuditMaxBytes)

	mode, err := events.ParseMode(cfg.Audit.Mode)
	if err != nil {
		return err
	}
	d.Publisher, err = events.NewPublisher(d.JS, cfg.ClusterName,
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

	err = runRoles(ctx, d)
	log.Info("shutting down", "cause", context.Cause(ctx))
	return err
}

// runRoles runs every enabled role in its own goroutine. The first to fail
// ends the others; all have returned when runRoles does.
func runRoles(ctx context.Context, d *startDeps) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		names []string
	)
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
