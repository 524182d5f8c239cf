// Package protocol describes each database protocol Tollgate speaks, once:
// its name in configuration and events, the engine that serves it, its
// default port, how people and OCSF name it, what a db_name means for it,
// and the TLS server name a client sends to reach a database through an
// agent.
//
// Everything that used to switch on protocol names (configuration checks,
// the access decision, STATE, exporters, session replay, tg) reads this
// table instead, so that adding a protocol means adding an entry here and
// not editing each of those. The package imports nothing else of
// Tollgate's so that any part, tg included, can use it without linking the
// agent.
package protocol

import "strings"

// Names of the protocols, as written in db_service.databases[].protocol,
// in STATE and in every event's db_protocol.
const (
	Postgres    = "postgres"
	CockroachDB = "cockroachdb"
	MySQL       = "mysql"
	SQLServer   = "sqlserver"
	Redis       = "redis"
)

// DBName says what a session's db_name is for a protocol, and so whether
// the access decision may rely on it.
type DBName int

const (
	// DBNameFixed: the database chosen at connect time, which the session
	// cannot leave (PostgreSQL). The decision checks it.
	DBNameFixed DBName = iota
	// DBNameChecked: the default database, which the session may switch;
	// the engine checks every switch against db_names itself (MySQL USE
	// and COM_INIT_DB), so the decision checks it too.
	DBNameChecked
	// DBNameUnchecked: the initial database, which the session may switch
	// without the engine checking (SQL Server USE). The name proves
	// nothing, so the decision leaves db_names out.
	DBNameUnchecked
)

// Protocol is what Tollgate knows of one database protocol.
type Protocol struct {
	// Name is the protocol's name (one of the constants above).
	Name string
	// Aliases are other spellings people and URL schemes use for it
	// (postgresql://, mariadb, mssql), which Resolve accepts. Stored
	// configuration and events always carry Name.
	Aliases []string
	// Engine names the agent engine that serves it: a protocol spoken by
	// another product (CockroachDB speaks PostgreSQL's) names that
	// protocol's engine, which then serves both.
	Engine string
	// DefaultPort is assumed when a database's uri names no port.
	DefaultPort string
	// Display is the name shown to people ("PostgreSQL").
	Display string
	// OCSF is the database description in OCSF events (database.desc).
	OCSF string
	// DBName is what db_name means.
	DBName DBName
	// StartupParameters is true when clients send settings with their
	// startup message, which refuse_startup_parameters may refuse.
	StartupParameters bool
	// Clients are the command-line clients `tg db connect` runs, the
	// first one found in PATH; none means it is not supported.
	Clients []string
}

// all is every protocol, in the order they are listed to people.
var all = []Protocol{
	{Name: Postgres, Aliases: []string{"postgresql"}, Engine: Postgres, DefaultPort: "5432", Display: "PostgreSQL", OCSF: "PostgreSQL",
		DBName: DBNameFixed, StartupParameters: true, Clients: []string{"psql"}},
	// CockroachDB's SQL shell speaks PostgreSQL's protocol; the PostgreSQL
	// engine serves it and psql reaches it.
	{Name: CockroachDB, Engine: Postgres, DefaultPort: "26257", Display: "CockroachDB", OCSF: "CockroachDB",
		DBName: DBNameFixed, StartupParameters: true, Clients: []string{"psql"}},
	// MariaDB speaks MySQL's protocol; its client comes first because it
	// is what the distributions ship.
	{Name: MySQL, Aliases: []string{"mariadb"}, Engine: MySQL, DefaultPort: "3306", Display: "MySQL", OCSF: "MySQL",
		DBName: DBNameChecked, Clients: []string{"mariadb", "mysql"}},
	{Name: SQLServer, Aliases: []string{"mssql"}, Engine: SQLServer, DefaultPort: "1433", Display: "SQL Server", OCSF: "Microsoft SQL Server",
		DBName: DBNameUnchecked},
	// A Redis db_name is the logical database number (0 at connect time);
	// the engine checks every SELECT, SWAPDB, MOVE and COPY ... DB against
	// db_names.
	{Name: Redis, Engine: Redis, DefaultPort: "6379", Display: "Redis", OCSF: "Redis",
		DBName: DBNameChecked, Clients: []string{"redis-cli"}},
}

// Lookup returns the protocol named name.
func Lookup(name string) (Protocol, bool) {
	for _, p := range all {
		if p.Name == name {
			return p, true
		}
	}
	return Protocol{}, false
}

// Resolve returns the protocol that s names, by name or alias, in any
// case: for what people type (a command-line flag, a URL scheme), not for
// stored names, which Lookup takes as they are.
func Resolve(s string) (Protocol, bool) {
	for _, p := range all {
		if strings.EqualFold(p.Name, s) {
			return p, true
		}
		for _, a := range p.Aliases {
			if strings.EqualFold(a, s) {
				return p, true
			}
		}
	}
	return Protocol{}, false
}

// Get returns the protocol named name, or the zero Protocol (no engine, no
// port, empty names) when there is none: for callers that treat an unknown
// protocol like one they have nothing to say about.
func Get(name string) Protocol {
	p, _ := Lookup(name)
	return p
}

// Known reports whether name is a protocol Tollgate speaks.
func Known(name string) bool {
	_, ok := Lookup(name)
	return ok
}

// EngineOf returns the engine that serves protocol name, "" when unknown.
func EngineOf(name string) string { return Get(name).Engine }

// All returns every protocol, in the order they are listed to people.
func All() []Protocol {
	out := make([]Protocol, len(all))
	copy(out, all)
	return out
}

// Names returns the name of every protocol, in listing order.
func Names() []string {
	out := make([]string, len(all))
	for i, p := range all {
		out[i] = p.Name
	}
	return out
}

// List joins the names of every protocol for a message: "a, b, c or d".
func List() string {
	n := Names()
	if len(n) < 2 {
		return strings.Join(n, "")
	}
	return strings.Join(n[:len(n)-1], ", ") + " or " + n[len(n)-1]
}

// ServerName is the TLS server name (SNI) a client sends to reach database
// name through an agent: the name itself, for every protocol. The agent
// routes on it (see Databases), and its certificate lists every database
// it serves as a DNS name, so a client verifies the agent with the
// database name as the expected host.
func ServerName(database string) string { return database }

// Databases returns the database names a server name may stand for, in the
// order an agent tries them: the name itself, then its first label when it
// is a longer host name (db1.agent.example.com reaches db1), so that a
// client may put the database in front of a DNS name of the agent.
func Databases(serverName string) []string {
	if i := strings.IndexByte(serverName, '.'); i > 0 {
		return []string{serverName, serverName[:i]}
	}
	return []string{serverName}
}
