package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/test/harness"
)

// Names the stack uses.
const (
	// DBUser is the database role the load logs in as.
	DBUser = "bench"
	// PGName is the PostgreSQL database's name in Tollgate, the TLS server
	// name clients send to the agent.
	PGName = "pg"
	// TollgateUser is the Tollgate user of the load's certificate.
	TollgateUser = "loader"
	// Cluster is the cluster_name of every configuration.
	Cluster = "faults"
	// MyName is the MariaDB database's name in Tollgate; MyUser the
	// MariaDB account of the sysbench load (REQUIRE SUBJECT its
	// certificate's CN) and MyDatabase its schema.
	MyName     = "my"
	MyUser     = "sbtest"
	MyDatabase = "test"
)

// StackOptions shape a Stack.
type StackOptions struct {
	// NATSURLs are external servers (a cluster); empty starts a
	// nats-server process of the stack's own.
	NATSURLs []string
	// MaxFileStore bounds the own server's JetStream file store.
	MaxFileStore int64
	// Replicas of the streams (3 on a cluster).
	Replicas int
	// Exporter runs a file exporter process.
	Exporter bool
	// MaxConnections and MaxConnectionsPerUser set the agent's limits.
	MaxConnections, MaxConnectionsPerUser int
	// PGMaxConnections raises PostgreSQL's max_connections (50).
	PGMaxConnections int
	// PgbenchScale initialises pgbench's tables at this scale (1 when 0).
	PgbenchScale int
	// MariaDB adds a MariaDB database (TLS, general_log on) to the agent.
	MariaDB bool
	// ExportFormats add a file exporter per format (ocsf, cloudevents)
	// beside the native one, in the same exporter process; needs Exporter.
	ExportFormats []string
}

// Stack is PostgreSQL, NATS and Tollgate's broker, agent and exporter as
// separate processes, the agent reaching NATS through a Link.
type Stack struct {
	Dir, DataDir string
	Bin          Binaries
	PG           *harness.PostgresServer
	// MariaDB is set with StackOptions.MariaDB.
	MariaDB  *harness.MariaDBServer
	NATS     *NATSD
	NATSURLs []string
	// AgentLink carries the agent's connections to NATS.
	AgentLink *Link
	Broker    *Node
	Agent     *Node
	Exporter  *Node
	// AgentAddr is where clients reach the agent.
	AgentAddr, ProxyAddr string
	// Files a client needs: the host CA (sslrootcert) and the user's
	// certificate and key.
	HostCAFile, UserCertFile, UserKeyFile string
	// ExportFile is what the file exporter writes.
	ExportFile string
	// ExportFiles are what the exporters of StackOptions.ExportFormats
	// write, by format.
	ExportFiles map[string]string
	// Config is the configuration file of the broker and the exporter.
	Config string
	// CAs are the cluster's authorities (in DataDir).
	CAs *ca.Authorities

	NC *nats.Conn
	JS jetstream.JetStream
}

// NewStack starts everything and stops it when the test ends.
func NewStack(t testing.TB, bin Binaries, o StackOptions) *Stack {
	t.Helper()
	s := &Stack{Dir: t.TempDir(), Bin: bin}
	s.DataDir = filepath.Join(s.Dir, "data")
	var err error
	if s.CAs, err = ca.Open(s.DataDir); err != nil {
		t.Fatal(err)
	}
	s.PG = StartPostgres(t, s.CAs, o.PGMaxConnections, o.PgbenchScale)
	s.HostCAFile, s.UserCertFile, s.UserKeyFile = UserFiles(t, s.CAs, s.Dir, TollgateUser)
	if o.MariaDB {
		dbClient, err := s.CAs.CertPEM(ca.DBClient)
		if err != nil {
			t.Fatal(err)
		}
		// general_log is on: the server's own record of every statement.
		s.MariaDB = harness.MariaDBWith(t, harness.MariaDBOptions{TLS: harness.TLSOptions{ClientCA: dbClient},
			Users: []string{MyUser}, Args: []string{"--max-connections=100"}})
	}

	s.NATSURLs = o.NATSURLs
	if len(s.NATSURLs) == 0 {
		if s.NATS, err = StartNATS(bin.NATSServer, NATSOptions{Dir: filepath.Join(s.Dir, "nats"), MaxFileStore: o.MaxFileStore}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.NATS.Stop() })
		s.NATSURLs = []string{s.NATS.URL()}
	}
	// The agent's way to NATS goes through a link the test can cut; with
	// a cluster, through links to every node would hide the node loss, so
	// the agent reaches the cluster directly.
	agentURLs := s.NATSURLs
	if s.NATS != nil {
		if s.AgentLink, err = NewLink(s.NATS.Addr()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.AgentLink.Close)
		agentURLs = []string{"nats://" + s.AgentLink.Addr()}
	}
	if s.NC, err = nats.Connect(strings.Join(s.NATSURLs, ","), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.NC.Close)
	if s.JS, err = jetstream.New(s.NC); err != nil {
		t.Fatal(err)
	}

	s.AgentAddr, s.ProxyAddr = freeAddr(t), freeAddr(t)
	s.ExportFile = filepath.Join(s.Dir, "export", "audit.jsonl")
	p := ConfigParams{DataDir: s.DataDir, NATSURLs: s.NATSURLs, ProxyListen: s.ProxyAddr, AgentListen: s.AgentAddr,
		PGAddr: s.PG.Addr(), PGCAFile: s.PG.ServerCAFile, Replicas: o.Replicas,
		MaxConnections: o.MaxConnections, MaxConnectionsPerUser: o.MaxConnectionsPerUser}
	if s.MariaDB != nil {
		p.MyAddr, p.MyCAFile = s.MariaDB.Addr(), s.MariaDB.ServerCAFile
	}
	if o.Exporter {
		p.ExportFile = s.ExportFile
		s.ExportFiles = map[string]string{}
		for _, f := range o.ExportFormats {
			s.ExportFiles[f] = filepath.Join(s.Dir, "export", "audit-"+f+".jsonl")
			p.MoreExports = append(p.MoreExports, ExportParams{Name: ExporterName(f), Format: f, Path: s.ExportFiles[f]})
		}
	}
	common := WriteConfig(t, filepath.Join(s.Dir, "tollgate.yaml"), p)
	s.Config = common
	p.NATSURLs = agentURLs
	agentCfg := WriteConfig(t, filepath.Join(s.Dir, "agent.yaml"), p)

	s.Broker = &Node{Name: "broker", Bin: bin.Tollgate, Config: common, Roles: []string{"broker"},
		Ready: dialable(s.ProxyAddr), Log: filepath.Join(s.Dir, "broker.log")}
	s.Agent = &Node{Name: "agent", Bin: bin.Tollgate, Config: agentCfg, Roles: []string{"agent"},
		Ready: dialable(s.AgentAddr), Log: filepath.Join(s.Dir, "agent.log")}
	nodes := []*Node{s.Broker, s.Agent}
	if o.Exporter {
		s.Exporter = &Node{Name: "exporter", Bin: bin.Tollgate, Config: common, Roles: []string{"exporter"},
			Ready: s.consumerExists("file"), Log: filepath.Join(s.Dir, "exporter.log")}
		nodes = append(nodes, s.Exporter)
	}
	for _, n := range nodes {
		if err := n.Start(); err != nil {
			t.Fatalf("%v\n%s", err, n.LogTail())
		}
		t.Cleanup(func() {
			if err := n.Stop(); err != nil {
				t.Logf("stopping %s: %v", n.Name, err)
			}
		})
	}
	return s
}

// consumerExists is a Ready check of an exporter: its durable consumer
// exists on AUDIT.
func (s *Stack) consumerExists(name string) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := s.JS.Stream(ctx, "AUDIT")
		if err != nil {
			return err
		}
		for n := range st.ConsumerNames(ctx).Name() {
			if strings.Contains(n, name) {
				return nil
			}
		}
		return fmt.Errorf("no consumer of exporter %q on AUDIT yet", name)
	}
}

// ConfigParams fill WriteConfig's template.
type ConfigParams struct {
	DataDir     string
	NATSURLs    []string
	ProxyListen string
	// ProxyPublic, when set, is proxy.public_addr: what the proxy
	// announces to agents.
	ProxyPublic string
	AgentListen string
	PGAddr      string
	PGCAFile    string
	// MyAddr and MyCAFile, when set, add the MariaDB database MyName.
	MyAddr, MyCAFile string
	ExportFile       string
	// MoreExports are file exporters beside ExportFile's (which must be set).
	MoreExports []ExportParams
	Replicas    int
	// Embedded, when set, replaces nats.urls: the embedded server's YAML
	// (listen, leaf) indented under nats.
	Embedded                              string
	MaxConnections, MaxConnectionsPerUser int
}

// ExportParams describe one file exporter.
type ExportParams struct {
	Name, Format, Path string
}

// ExporterName is the name of the file exporter of format f.
func ExporterName(f string) string { return "file-" + f }

// WriteConfig writes a configuration file of every role and returns its
// path.
func WriteConfig(t testing.TB, path string, p ConfigParams) string {
	t.Helper()
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, "cluster_name: %s\ndata_dir: %s\nnats:\n", Cluster, q(p.DataDir))
	if p.Embedded != "" {
		b.WriteString(p.Embedded)
	} else {
		b.WriteString("  urls:\n")
		for _, u := range p.NATSURLs {
			fmt.Fprintf(&b, "    - %s\n", q(u))
		}
	}
	if p.Replicas > 0 {
		fmt.Fprintf(&b, "  replicas: %d\n", p.Replicas)
	}
	fmt.Fprintf(&b, "proxy:\n  listen: %s\n", q(p.ProxyListen))
	if p.ProxyPublic != "" {
		fmt.Fprintf(&b, "  public_addr: %s\n", q(p.ProxyPublic))
	}
	fmt.Fprintf(&b, "db_service:\n  listen: %s\n", q(p.AgentListen))
	if p.MaxConnections > 0 {
		fmt.Fprintf(&b, "  max_connections: %d\n", p.MaxConnections)
	}
	if p.MaxConnectionsPerUser > 0 {
		fmt.Fprintf(&b, "  max_connections_per_user: %d\n", p.MaxConnectionsPerUser)
	}
	fmt.Fprintf(&b, `  databases:
    - name: %s
      protocol: postgres
      uri: %s
      static_labels: {env: faults}
      tls: {mode: verify-full, ca_cert_file: %s}
`, PGName, q(p.PGAddr), q(p.PGCAFile))
	if p.MyAddr != "" {
		fmt.Fprintf(&b, `    - name: %s
      protocol: mysql
      uri: %s
      static_labels: {env: faults}
      tls: {mode: verify-full, ca_cert_file: %s}
`, MyName, q(p.MyAddr), q(p.MyCAFile))
	}
	if p.ExportFile != "" {
		b.WriteString("exporters:\n")
		for _, e := range append([]ExportParams{{Name: "file", Format: "json", Path: p.ExportFile}}, p.MoreExports...) {
			fmt.Fprintf(&b, `  - name: %s
    type: file
    format: %s
    settings:
      path: %s
      ack_wait: 5s
      backoff_max: 2s
      streams: [AUDIT]
`, e.Name, e.Format, q(e.Path))
		}
	}
	b.WriteString("log:\n  level: info\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// StartPostgres starts PostgreSQL trusting the cluster's db-client CA,
// with the load's role and pgbench's tables at scale (1 when 0).
func StartPostgres(t testing.TB, cas *ca.Authorities, maxConns, scale int) *harness.PostgresServer {
	t.Helper()
	dbClient, err := cas.CertPEM(ca.DBClient)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	if maxConns > 0 {
		settings["max_connections"] = strconv.Itoa(maxConns)
	}
	pg := harness.PostgresWith(t, harness.PostgresOptions{
		TLS: harness.TLSOptions{ClientCA: dbClient}, Users: []string{DBUser}, Settings: settings,
	})
	if scale <= 0 {
		scale = 1
	}
	// Initialised directly as the superuser: the load, not the setup, is
	// what goes through the agent.
	cmd := exec.Command("pgbench", "-i", "-q", "-s", strconv.Itoa(scale), "postgres")
	cmd.Env = AdminEnv(pg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	pg.MustExec(t, "GRANT ALL ON ALL TABLES IN SCHEMA public TO "+DBUser)
	return pg
}

// AdminEnv is the libpq environment of pg's superuser over its socket.
func AdminEnv(pg *harness.PostgresServer) []string {
	return append(childEnv(), "LC_ALL=C", "PGHOST="+pg.SocketDir, "PGPORT="+strconv.Itoa(pg.Port()),
		"PGUSER="+pg.Superuser, "PGDATABASE=postgres", "PGSSLMODE=disable")
}

// UserFiles writes the host CA and a user certificate with the built-in
// access role for DBUser on database postgres and MyUser on MyDatabase; it
// returns their paths. The certificate is made and written as the agent's
// own end-to-end tests make theirs.
func UserFiles(t testing.TB, cas *ca.Authorities, dir, user string) (hostCA, cert, key string) {
	t.Helper()
	hostPEM, err := cas.CertPEM(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	c := agenttest.UserCert(t, cas, identity.Identity{User: user, Roles: []string{access.RoleAccess},
		Traits: map[string][]string{identity.TraitDBUsers: {DBUser, MyUser}, identity.TraitDBNames: {"postgres", MyDatabase}}}, 24*time.Hour)
	cert, key = agenttest.WriteCert(t, dir, user, c)
	return agenttest.WriteFile(t, dir, "host-ca.crt", hostPEM), cert, key
}

// ClientEnv is the libpq environment of a client of the agent at addr:
// verify-full against the host CA under the database's name (the SNI
// that routes), the user's certificate.
func (s *Stack) ClientEnv() []string {
	return ClientEnv(s.AgentAddr, s.HostCAFile, s.UserCertFile, s.UserKeyFile)
}

// ClientEnv is the libpq environment of a client of an agent.
func ClientEnv(agentAddr, hostCA, cert, key string) []string {
	host, port, _ := net.SplitHostPort(agentAddr)
	return append(childEnv(), "LC_ALL=C", "PGHOST="+PGName, "PGHOSTADDR="+host, "PGPORT="+port,
		"PGUSER="+DBUser, "PGDATABASE=postgres", "PGSSLMODE=verify-full", "PGSSLROOTCERT="+hostCA,
		"PGSSLCERT="+cert, "PGSSLKEY="+key, "PGCONNECT_TIMEOUT=10")
}

// DSN is a pgx/libpq connection string to the agent.
func (s *Stack) DSN() string { return DSN(s.AgentAddr, s.HostCAFile, s.UserCertFile, s.UserKeyFile) }

// DSN is a connection string to an agent.
func DSN(agentAddr, hostCA, cert, key string) string {
	host, port, _ := net.SplitHostPort(agentAddr)
	return fmt.Sprintf("host=%s hostaddr=%s port=%s user=%s dbname=postgres sslmode=verify-full sslrootcert=%s sslcert=%s sslkey=%s connect_timeout=10",
		PGName, host, port, DBUser, hostCA, cert, key)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(p)
}
