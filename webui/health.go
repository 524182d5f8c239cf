package webui

import (
	"net/http"
	"sort"
	"time"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/exporters"
)

type healthData struct {
	Exporters []exporters.Status
	Types     map[string]string
	// Agents are the registered databases with the agent serving each,
	// live or not.
	Agents []api.Database
	// Proxies are the proxies whose lease runs (broker/presence).
	Proxies []proxyRow
}

// proxyRow is a proxy with the age of its lease and the agent tunnels it
// holds.
type proxyRow struct {
	presence.Proxy
	// Age is how long ago the proxy last renewed its lease; a proxy that
	// keeps up renews every third of the lease.
	Age     time.Duration
	Tunnels []presence.Route
}

// health shows what `tollgate exporters ls` and `tollgate db ls` show an
// administrator: each exporter's lag, deliveries and dead letters, each
// registered database's agent with its last heartbeat and the proxies
// that route it, and each proxy in PRESENCE with the tunnels it holds.
func (u *UI) health(w http.ResponseWriter, r *http.Request, c *caller) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	d := healthData{Types: map[string]string{}}
	names := make([]string, 0, len(u.o.Exporters))
	for _, e := range u.o.Exporters {
		names = append(names, e.Name)
		d.Types[e.Name] = e.Type
	}
	v := u.view(c, "Health", "health", &d)
	var err error
	if d.Exporters, err = exporters.List(r.Context(), u.o.JS, names...); err != nil {
		v.Error = err.Error()
	}
	if d.Agents, err = u.admin(r, c).Databases(r.Context()); err != nil {
		v.Error = err.Error()
	}
	sort.Slice(d.Agents, func(i, j int) bool {
		if d.Agents[i].HostID != d.Agents[j].HostID {
			return d.Agents[i].HostID < d.Agents[j].HostID
		}
		return d.Agents[i].Name < d.Agents[j].Name
	})
	if u.o.Presence != nil {
		now := u.o.Now()
		for _, p := range u.o.Presence.Proxies() {
			row := proxyRow{Proxy: p, Tunnels: u.o.Presence.Tunnels(p.ID)}
			if !p.Renewed.IsZero() {
				row.Age = max(now.Sub(p.Renewed), 0)
			}
			d.Proxies = append(d.Proxies, row)
		}
	}
	u.render(w, http.StatusOK, "health", v)
}
