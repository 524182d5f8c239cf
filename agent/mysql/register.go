package mysql

import (
	"context"
	"fmt"
	"net"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/protocol"
)

// Settings are a MySQL database's own settings
// (db_service.databases[].settings).
type Settings struct {
	// ServerVersion is the version the agent's greeting announces for the
	// database until it has seen the database's own (the greeting goes out
	// before the agent connects upstream); clients that pick features by
	// version read it. Empty means DefaultServerVersion.
	ServerVersion string `yaml:"server_version"`
}

func init() {
	agent.RegisterEngine(protocol.MySQL, agent.EngineRegistration{New: newFromParams})
}

// newFromParams is the engine the agent service runs, with its own port
// when db_service.mysql_listen is set.
func newFromParams(_ context.Context, p *agent.EngineParams) (agent.Engine, error) {
	e := New(Options{Password: p.Password, Logger: p.Log})
	for _, d := range p.Databases {
		var s Settings
		if err := p.Decode(d, &s); err != nil {
			return nil, err
		}
		if s.ServerVersion != "" {
			e.versions[d.Name] = s.ServerVersion
		}
	}
	e.port = p.Config.DBService.MySQLListen
	e.portOpts = ListenerOptions{Cluster: p.Config.ClusterName, Recorder: p.Recorder}
	for _, d := range p.Databases {
		e.portDBs = append(e.portDBs, d.Name)
	}
	return e, nil
}

// OpenPort opens db_service.mysql_listen (agent.PortServer): a port where
// the agent greets MySQL clients first (see Listener). Without SNI its
// connections go to the only MySQL database, if there is one.
func (e *Engine) OpenPort(s *agent.Server) (net.Listener, error) {
	if e.port == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", e.port)
	if err != nil {
		return nil, fmt.Errorf("db_service.mysql_listen: %w", err)
	}
	o := e.portOpts
	if len(e.portDBs) == 1 {
		o.Database, _ = s.Database(e.portDBs[0])
	}
	return e.Listener(ln, o), nil
}
