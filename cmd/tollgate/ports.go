package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// listenAddr is one address the daemon will listen on and what sets it.
type listenAddr struct {
	addr string
	key  string // the configuration key, or "" for a flag only
	flag string // the flag that sets it, if any
}

// startListenAddrs are the addresses runStart will listen on for cfg.
func startListenAddrs(cfg *config.Config) []listenAddr {
	var out []listenAddr
	if l := cfg.NATS.Embedded.Listen; len(cfg.NATS.URLs) == 0 && !eventsViaProxy(cfg) && !eventsViaBroker(cfg) && l != "" && l != natsserver.InProcessOnly {
		out = append(out, listenAddr{addr: l, key: "nats.embedded.listen"})
	}
	if roleSelectedByName("broker", cfg) || roleSelectedByName("proxy", cfg) {
		out = append(out, listenAddr{addr: cfg.Proxy.Listen, key: "proxy.listen"})
	}
	if roleSelectedByName("agent", cfg) {
		if cfg.DBService.Listen != "" {
			out = append(out, listenAddr{addr: cfg.DBService.Listen, key: "db_service.listen"})
		}
		if a := cfg.DBService.MySQLListen; a != "" {
			out = append(out, listenAddr{addr: a, key: "db_service.mysql_listen"})
		}
	}
	if roleSelectedByName("exporter", cfg) && flagMetricsListen != "" {
		out = append(out, listenAddr{addr: flagMetricsListen, flag: "--metrics-listen"})
	}
	if flagHealthListen != "" {
		out = append(out, listenAddr{addr: flagHealthListen, flag: "--health-listen"})
	}
	return out
}

// checkListenAddrs tries each address before anything starts, so a port in
// use fails at once, naming what to change, rather than after a server or
// a database has started. where names the configuration file, if any.
func checkListenAddrs(addrs []listenAddr, where string) error {
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a.addr)
		if err == nil {
			ln.Close()
			continue
		}
		var change []string
		if a.key != "" {
			k := a.key
			if where != "" {
				k += " in " + where
			}
			change = append(change, k)
		}
		if a.flag != "" {
			change = append(change, a.flag)
		}
		what := "cannot be listened on"
		if errors.Is(err, syscall.EADDRINUSE) {
			what = "is already in use"
		}
		return fmt.Errorf("address %s %s (another tollgate, or another program?); change %s: %w",
			a.addr, what, strings.Join(change, " or "), err)
	}
	return nil
}
