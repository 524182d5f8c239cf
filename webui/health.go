package webui

import (
	"net/http"
	"sort"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/exporters"
)

type healthData struct {
	Exporters []exporters.Status
	Types     map[string]string
	// Agents are the registered databases with the agent serving each,
	// live or not.
	Agents []api.Database
}

// health shows what `tollgate exporters ls` and `tollgate db ls` show an
// administrator: each exporter's lag, deliveries and dead letters, and
// each registered database's agent with its last heartbeat.
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
	u.render(w, http.StatusOK, "health", v)
}
