package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/exporters"
)

// flagHealthListen is where `tollgate start` answers liveness and readiness
// probes. An orchestrator needs them for every role, and the agent may have
// no listening socket at all (proxy_addrs only), so a TCP probe on a role's
// own port is not enough.
var flagHealthListen string

// flagCheck makes `tollgate start` validate and exit.
var flagCheck bool

// health answers /healthz while the process runs, and /readyz once NATS
// and the streams are up, every role is launched and those that say so
// serve, their listen addresses accept connections, and while the AUDIT
// stream is what it must be (strict statements are refused otherwise, so
// the process is not ready for traffic).
type health struct {
	started  atomic.Bool
	fault    atomic.Pointer[func() error]
	starting atomic.Pointer[startingFunc]
	// dial are the roles' own listen addresses: a role is launched before
	// it listens (the broker's API opens after its state is loaded), and
	// a process is ready for traffic only once they accept connections.
	dial []listenAddr
}

func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		_, _ = io.WriteString(w, "ok\n")
	case "/readyz":
		if !h.started.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		if f := h.starting.Load(); f != nil {
			if rs := f.roles(); len(rs) > 0 {
				http.Error(w, "starting: "+strings.Join(rs, ", "), http.StatusServiceUnavailable)
				return
			}
		}
		for _, a := range h.dial {
			c, err := net.DialTimeout("tcp", dialable(a.addr), time.Second)
			if err != nil {
				http.Error(w, fmt.Sprintf("%s (%s) does not accept connections yet", a.addr, a.key), http.StatusServiceUnavailable)
				return
			}
			c.Close()
		}
		if f := h.fault.Load(); f != nil {
			if err := (*f)(); err != nil {
				http.Error(w, "AUDIT stream: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = io.WriteString(w, "ready\n")
	default:
		http.NotFound(w, r)
	}
}

// startingFunc lists the roles not serving yet.
type startingFunc struct{ roles func() []string }

// dialable is where to reach a listen address from this host: the
// loopback address for an unspecified host.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// serveHealth listens on addr (checked beforehand with the other listen
// addresses) and returns the handler and a function that stops it.
// readyWhen are the listen addresses of the configuration's roles: those
// of a known port (not :0) and keyed in the configuration, not flags such
// as --metrics-listen, which serve no traffic of the roles.
func serveHealth(addr string, readyWhen []listenAddr) (*health, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--health-listen: %w", err)
	}
	h := &health{}
	for _, a := range readyWhen {
		if _, port, err := net.SplitHostPort(a.addr); err == nil && port != "0" && a.key != "" {
			h.dial = append(h.dial, a)
		}
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return h, func() { _ = srv.Close() }, nil
}

// checkStart is `tollgate start --check`: it validates the configuration
// as start would use it (the file decoded strictly, --roles, what each
// selected role needs of it, the exporters' types, formats and delivery
// settings) without opening a file it names, listening, or connecting,
// so it runs where the configuration is written (a package build, a Helm
// chart's tests, `tollgate configure`) as well as where it will run.
func checkStart(w io.Writer, cfg *config.Config) error {
	var roles []string
	for _, r := range startRoles {
		if roleSelected(r, cfg) {
			roles = append(roles, r.Name)
		}
	}
	var errs []error
	if len(roles) == 0 {
		errs = append(errs, errors.New("no role would run: the configuration enables none and --roles names none"))
	}
	if slices.Contains(roles, "exporter") {
		if len(cfg.Exporters) == 0 {
			errs = append(errs, errors.New("exporter: no exporters in the configuration (exporters:)"))
		}
		for i, e := range cfg.Exporters {
			if err := exporters.Check(i, e); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if slices.Contains(roles, "agent") {
		if len(cfg.DBService.Databases) == 0 {
			errs = append(errs, errors.New("agent: db_service.databases lists no database"))
		}
		if cfg.DBService.Listen == "" && len(cfg.DBService.ProxyAddrs) == 0 {
			errs = append(errs, errors.New("agent: neither db_service.listen nor db_service.proxy_addrs: clients could not reach it"))
		}
		if !slices.Contains(roles, "broker") && cfg.DBService.JoinToken != "" && cfg.DBService.BrokerCAPin == "" {
			errs = append(errs, errors.New("agent: db_service.join_token without db_service.broker_ca_pin: the broker could not be checked on joining"))
		}
		if p := cfg.DBService.BrokerCAPin; p != "" {
			if _, err := api.ParsePin(p); err != nil {
				errs = append(errs, fmt.Errorf("agent: db_service.broker_ca_pin: %w", err))
			}
		}
	}
	// A cluster may allow anonymous clients, so this is only a warning;
	// one configured from deploy/nats refuses them.
	if n := cfg.NATS; len(n.URLs) > 0 && n.CredentialsDir == "" && n.CredsFile == "" && n.NKeySeedFile == "" && n.User == "" && n.Token == "" {
		fmt.Fprintln(w, "warning: nats.urls without credentials (credentials_dir, creds_file, nkey_seed_file, user/password or token): a cluster with Tollgate's authorization refuses anonymous connections")
	}
	if err := errors.Join(errs...); err != nil {
		where := "configuration"
		if cfg.Path() != "" {
			where = cfg.Path()
		}
		return fmt.Errorf("%s: %w", where, err)
	}
	nats := "embedded"
	switch {
	case len(cfg.NATS.URLs) > 0:
		nats = strings.Join(cfg.NATS.URLs, ",")
	case eventsViaProxy(cfg):
		nats = "through the proxy " + strings.Join(cfg.DBService.ProxyAddrs, ",")
	case eventsViaBroker(cfg):
		nats = "through the broker's port " + cfg.Proxy.BrokerAddr
	}
	fmt.Fprintf(w, "configuration ok: cluster %s, roles %s, nats %s, audit %s\n", cfg.ClusterName, strings.Join(roles, ","), nats, cfg.Audit.Mode)
	return nil
}
