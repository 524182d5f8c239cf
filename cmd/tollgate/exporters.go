package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/exporters"

	// The sinks register themselves with the exporters.
	_ "github.com/tollgate-db/tollgate/exporters/file"
	_ "github.com/tollgate-db/tollgate/exporters/kafka"
	_ "github.com/tollgate-db/tollgate/exporters/splunk"
	_ "github.com/tollgate-db/tollgate/exporters/syslog"
)

// The exporter role of `tollgate start`: every exporter of the
// configuration, each a durable consumer of AUDIT and STATE delivering to
// its sink. Several processes running it share the work.
func init() {
	addStartRole(startRole{
		Name:    "exporter",
		Enabled: func(c *config.Config) bool { return len(c.Exporters) > 0 },
		Run:     runExporters,
	})

	ex := &cobra.Command{Use: "exporters", Short: "The exporters that deliver the audit stream to SIEMs"}
	ex.AddCommand(exportersLsCmd())
	root.AddCommand(ex)
}

func runExporters(ctx context.Context, d *startDeps) error {
	if len(d.Config.Exporters) == 0 {
		return errors.New("no exporters in the configuration (exporters:)")
	}
	reg := prometheus.NewRegistry()
	m, err := exporters.NewMetrics(reg)
	if err != nil {
		return err
	}
	log := d.Log.With("component", "exporter")
	if flagMetricsListen != "" {
		ln, err := net.Listen("tcp", flagMetricsListen)
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		log.Info("exporter metrics listening", "addr", "http://"+ln.Addr().String()+"/metrics")
	}
	// Dead-letter reports are stored before the event they report on is
	// acknowledged, whatever audit.mode says: a strict publisher of their
	// own.
	_, js, err := d.As(natsserver.Exporter)
	if err != nil {
		return err
	}
	pub, err := events.NewPublisher(js, d.Config.ClusterName, events.WithAckTimeout(d.Config.Audit.AckTimeout.Std()),
		events.WithLogger(log))
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = pub.Close(cctx)
	}()
	return exporters.RunAll(ctx, d.Config.Exporters, exporters.Deps{
		JS: js, Publisher: pub, Log: log, Metrics: m, Replicas: d.Config.NATS.Replicas,
	})
}

func exportersLsCmd() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ls",
		Short: "Each exporter's lag, delivered events, retries and dead letters",
		Long: `List every exporter of the configuration and every exporter that has a
consumer in the streams: LAG is the events stored and not yet confirmed by its
sink, DELIVERED the events its sinks confirmed (a duplicate after a crash counts
again), RETRIES the failed deliveries that were retried, DEAD the events a sink
rejected for good (kept in the DEADLETTER stream). Counters are summed over the
exporter's replicas and restarts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := startConfig(flagConfig, flagDataDir)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			ctx, cancel := context.WithTimeout(ctx, adminTimeout)
			defer cancel()
			nc, closeNATS, err := adminNATS(ctx, cfg)
			if err != nil {
				return err
			}
			defer closeNATS()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			types := map[string]string{}
			names := make([]string, 0, len(cfg.Exporters))
			for _, e := range cfg.Exporters {
				names = append(names, e.Name)
				types[e.Name] = e.Type
			}
			st, err := exporters.List(ctx, js, names...)
			if err != nil {
				return err
			}
			return printList(cmd.OutOrStdout(), format, st,
				[]string{"NAME", "TYPE", "LAG", "DELIVERED", "RETRIES", "DEAD", "LAST DELIVERY", "LAST ERROR"},
				func(s exporters.Status) []string {
					typ := types[s.Name]
					if typ == "" {
						typ = "-"
					}
					last := "-"
					if !s.Stats.LastDelivery.IsZero() {
						last = s.Stats.LastDelivery.UTC().Format(time.RFC3339)
					}
					lastErr := "-"
					if s.Stats.LastError != "" {
						lastErr = s.Stats.LastErrorTime.UTC().Format(time.RFC3339) + " " + oneLine(s.Stats.LastError, 80)
					}
					return []string{s.Name, typ, fmt.Sprint(s.Lag), fmt.Sprint(s.Stats.Delivered), fmt.Sprint(s.Stats.Retries),
						fmt.Sprint(s.Stats.DeadLetters), last, lastErr}
				})
		},
	}
	c.Flags().StringVar(&format, "format", "text", "text or json")
	return c
}

// oneLine shortens s to one line of at most n characters for a table.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
