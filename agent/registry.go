package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/config/strictyaml"
)

// EngineParams is what an engine is built from when the agent starts.
type EngineParams struct {
	// Config is the agent's configuration.
	Config *config.Config
	// Databases are the configured databases the engine serves (those of
	// every protocol it speaks), with their settings; see Decode.
	Databases []config.Database
	// Recorder stores audit events, for what an engine records outside a
	// Server's connections (refusals on a port of its own).
	Recorder Recorder
	// Host is the agent's own certificate, for engines that offer TLS
	// inside their protocol.
	Host tls.Certificate
	// CAs are the certificate authorities of the data dir when the broker
	// runs in the agent's process, nil otherwise; only engines registered
	// with LocalCAs are built then.
	CAs *ca.Authorities
	// DataDir is where the engine may keep files of its own (under
	// DataDir/agent).
	DataDir string
	// Password returns the password of a new upstream connection to a
	// database behind RDS Proxy (an IAM token).
	Password func(ctx context.Context, db *Database, dbUser string) (string, error)
	Log      *slog.Logger
	// decoded collects the databases whose settings were decoded.
	decoded map[string]bool
}

// Decode decodes the settings of database d (db_service.databases[].settings)
// into v strictly: a key v has no field for, or a value of the wrong type, is
// an error naming the key. An engine that never calls Decode for a database
// takes no settings: any key given is an error when the agent starts.
func (p *EngineParams) Decode(d config.Database, v any) error {
	if p.decoded != nil {
		p.decoded[d.Name] = true
	}
	return strictyaml.DecodeNode(&d.Settings, v, "database "+d.Name+": settings")
}

// EngineFactory builds an engine. It is called once per agent, whatever
// the number of databases: one engine serves every database of its
// protocols (PostgreSQL's holds the cancel keys of all their sessions).
type EngineFactory func(ctx context.Context, p *EngineParams) (Engine, error)

// EngineRegistration is what an engine package registers.
type EngineRegistration struct {
	New EngineFactory
	// LocalCAs, when set, says why the engine needs the certificate
	// authorities of the data dir (the broker in the agent's process). An
	// agent without them does not build the engine and refuses to start
	// with a database it would serve.
	LocalCAs string
}

var (
	enginesMu sync.RWMutex
	engines   = map[string]EngineRegistration{}
)

// RegisterEngine makes an engine available under name, the Engine of the
// protocols it serves (protocol.Protocol.Engine). It panics on a duplicate:
// registration happens in init functions, and a program serves the engines
// whose packages it imports.
func RegisterEngine(name string, r EngineRegistration) {
	enginesMu.Lock()
	defer enginesMu.Unlock()
	if r.New == nil {
		panic("agent: engine registered without New: " + name)
	}
	if _, dup := engines[name]; dup {
		panic("agent: engine registered twice: " + name)
	}
	engines[name] = r
}

// EngineNames lists the registered engines, sorted.
func EngineNames() []string {
	enginesMu.RLock()
	defer enginesMu.RUnlock()
	out := make([]string, 0, len(engines))
	for n := range engines {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// LookupEngine returns the registration of engine name.
func LookupEngine(name string) (EngineRegistration, bool) {
	enginesMu.RLock()
	defer enginesMu.RUnlock()
	r, ok := engines[name]
	return r, ok
}

// NewEngine builds engine name from p, then checks that every database of
// p whose settings are not empty had them decoded by the engine.
func NewEngine(ctx context.Context, name string, p EngineParams) (Engine, error) {
	r, ok := LookupEngine(name)
	if !ok {
		return nil, fmt.Errorf("agent: no engine %q in this program", name)
	}
	p.decoded = map[string]bool{}
	e, err := r.New(ctx, &p)
	if err != nil {
		return nil, err
	}
	for _, d := range p.Databases {
		if settingsGiven(&d.Settings) && !p.decoded[d.Name] {
			return nil, fmt.Errorf("database %s: settings: the %s engine takes no settings", d.Name, name)
		}
	}
	return e, nil
}

// settingsGiven reports whether a settings node holds anything: an absent
// key, a null and an empty mapping give no settings.
func settingsGiven(n *yaml.Node) bool {
	switch n.Kind {
	case 0:
		return false
	case yaml.ScalarNode:
		return n.Tag != "!!null"
	case yaml.MappingNode:
		return len(n.Content) > 0
	}
	return true
}

// PortServer is implemented by an engine that serves a port of its own
// beside the agent's, such as MySQL's for clients that connect without tg
// (db_service.mysql_listen). OpenPort opens it for s.Serve; a nil listener
// means that no such port is configured.
type PortServer interface {
	OpenPort(s *Server) (net.Listener, error)
}
