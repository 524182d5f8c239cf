// Package config loads Tollgate's YAML configuration: one file for every
// role (broker, proxy, db_service, exporters), described in DESIGN.md §4.
//
// Decoding is strict: an unknown key or a value of the wrong type is an
// error that names the key and its line, because a misspelt security
// setting silently ignored is worse than a refusal to start.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-db/tollgate/config/strictyaml"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/protocol"
)

// Default ports. They stay clear of the standard ports of the databases and
// brokers Tollgate sits beside (5432, 3306, 1433, 4222, 6379, 5672, 1883).
const (
	DefaultNATSPort  = 4250
	DefaultProxyAddr = "127.0.0.1:3080"
	DefaultAgentAddr = "127.0.0.1:3036"
	DefaultCluster   = "tollgate"
)

// Config is the whole file.
type Config struct {
	ClusterName string     `yaml:"cluster_name"`
	DataDir     string     `yaml:"data_dir"`
	NATS        NATS       `yaml:"nats"`
	Broker      Broker     `yaml:"broker"`
	Proxy       Proxy      `yaml:"proxy"`
	DBService   DBService  `yaml:"db_service"`
	Exporters   []Exporter `yaml:"exporters"`
	Audit       Audit      `yaml:"audit"`
	Log         Log        `yaml:"log"`
	path        string
}

// NATS says where the event store is: embedded (the default) or external.
type NATS struct {
	// URLs of an external NATS cluster; empty means embedded.
	URLs []string `yaml:"urls"`
	// Credentials for an external cluster: a .creds file, or user and
	// password, or a token, or an NKey seed file.
	CredsFile    string `yaml:"creds_file"`
	NKeySeedFile string `yaml:"nkey_seed_file"`
	User         string `yaml:"user"`
	Password     string `yaml:"password"`
	Token        string `yaml:"token"`
	// CredentialsDir holds one nkey seed per part (broker.nk, agent.nk,
	// exporter.nk, auditor.nk): each role of the process connects with its
	// own identity. Embedded: <data_dir>/nats-auth, made on first start.
	CredentialsDir string `yaml:"credentials_dir"`
	TLS            TLS    `yaml:"tls"`
	// Embedded configures the in-process server.
	Embedded EmbeddedNATS `yaml:"embedded"`
	// Replicas of the AUDIT and STATE streams (1, or 3 on a cluster).
	Replicas int `yaml:"replicas"`
	// AuditMaxAge and AuditMaxBytes bound the AUDIT stream (limits retention).
	AuditMaxAge   Duration `yaml:"audit_max_age"`
	AuditMaxBytes int64    `yaml:"audit_max_bytes"`
	// Leaf makes the embedded server a leaf node of a hub NATS cluster
	// with a JetStream domain of its own: events are stored locally first,
	// so auditing goes on through a cut from the hub, and the hub's AUDIT
	// stream sources them (DESIGN.md §3). Only with the embedded server.
	Leaf *Leaf `yaml:"leaf"`
}

// Leaf configures the embedded server as a leaf node of a hub.
type Leaf struct {
	// HubURLs are the hub's leaf node listeners (nats-leaf://host:port or
	// host:port).
	HubURLs []string `yaml:"hub_urls"`
	// Domain is the JetStream domain of this leaf's own store; unique per
	// leaf, a NATS subject token.
	Domain string `yaml:"domain"`
	// HubDomain is the JetStream domain of the hub, whose AUDIT stream is
	// told to source this leaf's; "hub" when empty.
	HubDomain string `yaml:"hub_domain"`
	// CredsFile authenticates the leaf connection to the hub, if it asks.
	CredsFile string `yaml:"creds_file"`
	// TLS of the leaf connection to the hub.
	TLS TLS `yaml:"tls"`
}

// DefaultHubDomain is the JetStream domain a leaf expects of its hub.
const DefaultHubDomain = "hub"

// EmbeddedNATS configures the server started in-process.
type EmbeddedNATS struct {
	// Listen is host:port for client connections; "-" means in-process only.
	Listen string `yaml:"listen"`
	// StoreDir defaults to <data_dir>/nats.
	StoreDir string `yaml:"store_dir"`
	// MaxPayload in bytes; 1 MiB when zero.
	MaxPayload int32 `yaml:"max_payload"`
}

// TLS holds the files of a TLS client or server.
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Broker is the control plane.
type Broker struct {
	Enabled *bool `yaml:"enabled"`
}

// Proxy is the public port: the HTTPS API, the address users log in to,
// agents' reverse tunnels and database sessions routed through them.
type Proxy struct {
	// Enabled runs the proxy on listen in the broker's process (the
	// default there); false serves the HTTPS API alone on listen, without
	// tunnels. With broker.enabled false, true runs a proxy of its own
	// (the proxy role), which joins the broker at BrokerAddr.
	Enabled    *bool  `yaml:"enabled"`
	Listen     string `yaml:"listen"`
	PublicAddr string `yaml:"public_addr"`
	// BrokerAddr, JoinToken and BrokerCAPin are for a proxy without the
	// broker: the broker's port (host:port) it joins at, forwards what it
	// does not route to, and reaches the event plane through (unless
	// nats.urls is set); the token (`tollgate tokens add --type=proxy`)
	// is used once, for the certificate kept in the data dir, and the pin
	// is the broker's host CA.
	BrokerAddr  string `yaml:"broker_addr"`
	JoinToken   string `yaml:"join_token"`
	BrokerCAPin string `yaml:"broker_ca_pin"`
}

// DBService is the agent beside the databases.
type DBService struct {
	Enabled *bool  `yaml:"enabled"`
	Listen  string `yaml:"listen"`
	// PublicAddr is how clients reach the agent (SNI routes to a database).
	PublicAddr string `yaml:"public_addr"`
	// MySQLListen, when set, is host:port of a second port for MySQL and
	// MariaDB clients that connect without tg (mariadb --ssl-cert ...,
	// drivers with TLS): a MySQL client waits for the server to speak
	// first, so it cannot share the main port, where clients open with
	// TLS. The agent greets there offering only TLS.
	MySQLListen string `yaml:"mysql_listen"`
	// ProxyAddrs are proxies (host:port) the agent dials out to and keeps
	// a reverse tunnel with; clients then reach its databases through a
	// proxy's public port. With proxy_addrs and no listen, the agent opens
	// no listening socket at all.
	ProxyAddrs []string `yaml:"proxy_addrs"`
	// BrokerAddr and JoinToken are for an agent that joins a remote broker
	// (broker.enabled: false); BrokerAddr defaults to the first of
	// ProxyAddrs. The token is used once, for the host
	// certificate the agent then keeps in its data dir. BrokerCAPin is the
	// broker's host CA fingerprint (sha256:…, as `tollgate tokens add`
	// prints it), checked on that first connection.
	BrokerAddr  string     `yaml:"broker_addr"`
	JoinToken   string     `yaml:"join_token"`
	BrokerCAPin string     `yaml:"broker_ca_pin"`
	AuditMode   string     `yaml:"audit_mode"`
	Databases   []Database `yaml:"databases"`
	// MaxConnections bounds the client connections the agent serves at
	// once; past it a new connection is refused in its protocol's form
	// (PostgreSQL 53300 too_many_connections). 0: no limit.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerUser bounds the connections of one Tollgate user
	// (the identity of the certificate) at once. 0: no limit.
	MaxConnectionsPerUser int `yaml:"max_connections_per_user"`
}

// Database is one database the agent proxies.
type Database struct {
	Name         string            `yaml:"name"`
	Description  string            `yaml:"description"`
	Protocol     string            `yaml:"protocol"`
	URI          string            `yaml:"uri"`
	StaticLabels map[string]string `yaml:"static_labels"`
	TLS          DatabaseTLS       `yaml:"tls"`
	AWS          AWS               `yaml:"aws"`
	AD           AD                `yaml:"ad"`
	// AuditMode overrides db_service.audit_mode for this database.
	AuditMode string `yaml:"audit_mode"`
	// RefuseStartupParameters (PostgreSQL) names the settings a client may
	// not give at startup because they would silence the database's own
	// logging or auditing; "pgaudit.*" names a prefix. Unset means the
	// agent's default list; an empty list refuses none.
	RefuseStartupParameters []string `yaml:"refuse_startup_parameters"`
	// Settings of the protocol's engine for this database; decoded
	// strictly by the engine when the agent starts, so a key the engine
	// does not know is an error there (this package does not know the
	// engines).
	Settings yaml.Node `yaml:"settings"`
}

// DatabaseTLS says how the agent verifies the database's certificate.
type DatabaseTLS struct {
	Mode                string `yaml:"mode"`
	CACertFile          string `yaml:"ca_cert_file"`
	ServerName          string `yaml:"server_name"`
	TrustSystemCertPool bool   `yaml:"trust_system_cert_pool"`
}

// AWS configures IAM authentication through RDS Proxy.
type AWS struct {
	Region        string `yaml:"region"`
	RDSProxy      bool   `yaml:"rds_proxy"`
	AssumeRoleARN string `yaml:"assume_role_arn"`
	ExternalID    string `yaml:"external_id"`
}

// AD configures Kerberos authentication to SQL Server.
type AD struct {
	Domain      string `yaml:"domain"`
	SPN         string `yaml:"spn"`
	KDCHostName string `yaml:"kdc_host_name"`
	LDAPCert    string `yaml:"ldap_cert"`
	KeytabFile  string `yaml:"keytab_file"`
	Krb5File    string `yaml:"krb5_file"`
}

// Exporter is one sink that the audit stream is delivered to.
type Exporter struct {
	Name   string         `yaml:"name"`
	Type   string         `yaml:"type"`
	Format string         `yaml:"format"`
	Filter ExporterFilter `yaml:"filter"`
	// Settings of the sink named by Type; decoded strictly by the sink.
	Settings yaml.Node `yaml:"settings"`
}

// ExporterFilter narrows what an exporter delivers.
type ExporterFilter struct {
	Types     []string `yaml:"types"`
	Users     []string `yaml:"users"`
	Databases []string `yaml:"databases"`
}

// Audit configures the publisher.
type Audit struct {
	// Mode is strict (default) or async.
	Mode string `yaml:"mode"`
	// AckTimeout bounds how long a publish waits for the store (2s default).
	AckTimeout Duration `yaml:"ack_timeout"`
	// QueueSize bounds the async queue.
	QueueSize int `yaml:"queue_size"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Duration is a time.Duration written as "2s", "12h" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (want e.g. 2s, 15m, 12h)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.path = path
	if c.DataDir != "" && !filepath.IsAbs(c.DataDir) {
		c.DataDir = filepath.Join(filepath.Dir(path), c.DataDir)
	}
	return c, nil
}

// Parse decodes YAML strictly, fills defaults and validates.
func Parse(b []byte) (*Config, error) {
	c := &Config{}
	if err := strictyaml.Decode(b, c); err != nil {
		return nil, err
	}
	c.fillDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Default is the configuration of `tollgate start` without a file: every
// role enabled, embedded NATS, data in ./tollgate-data.
func Default() *Config {
	c := &Config{}
	c.fillDefaults()
	return c
}

// Path is the file the configuration came from, if any.
func (c *Config) Path() string { return c.path }

func (c *Config) fillDefaults() {
	if c.ClusterName == "" {
		c.ClusterName = DefaultCluster
	}
	if c.DataDir == "" {
		c.DataDir = "tollgate-data"
	}
	if len(c.NATS.URLs) == 0 {
		if c.NATS.Embedded.Listen == "" {
			c.NATS.Embedded.Listen = fmt.Sprintf("127.0.0.1:%d", DefaultNATSPort)
		}
		if c.NATS.Embedded.StoreDir == "" {
			c.NATS.Embedded.StoreDir = filepath.Join(c.DataDir, "nats")
		}
	}
	if c.NATS.Replicas == 0 {
		c.NATS.Replicas = 1
	}
	if l := c.NATS.Leaf; l != nil && l.HubDomain == "" {
		l.HubDomain = DefaultHubDomain
	}
	if c.Proxy.Listen == "" {
		c.Proxy.Listen = DefaultProxyAddr
	}
	if c.Proxy.PublicAddr == "" {
		c.Proxy.PublicAddr = c.Proxy.Listen
	}
	// An agent that tunnels to proxies listens only where it is told to.
	if c.DBService.Listen == "" && len(c.DBService.ProxyAddrs) == 0 {
		c.DBService.Listen = DefaultAgentAddr
	}
	if c.DBService.PublicAddr == "" && c.DBService.Listen != "" {
		c.DBService.PublicAddr = c.DBService.Listen
	}
	if c.Audit.Mode == "" {
		c.Audit.Mode = "strict"
	}
	if c.Audit.AckTimeout == 0 {
		c.Audit.AckTimeout = Duration(2 * time.Second)
	}
	if c.Audit.QueueSize == 0 {
		c.Audit.QueueSize = 65536
	}
	if c.DBService.AuditMode == "" {
		c.DBService.AuditMode = c.Audit.Mode
	}
	for i := range c.DBService.Databases {
		d := &c.DBService.Databases[i]
		if d.TLS.Mode == "" {
			d.TLS.Mode = "verify-full"
		}
		if d.AuditMode == "" {
			d.AuditMode = c.DBService.AuditMode
		}
	}
}

// Validate checks values that YAML types cannot express.
func (c *Config) Validate() error {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if err := events.ValidToken(c.ClusterName); err != nil {
		bad("cluster_name: %v", err)
	}
	if !oneOf(c.Audit.Mode, "strict", "async") {
		bad("audit.mode: %q is not strict or async", c.Audit.Mode)
	}
	if !oneOf(c.DBService.AuditMode, "strict", "async") {
		bad("db_service.audit_mode: %q is not strict or async", c.DBService.AuditMode)
	}
	if c.NATS.Replicas != 1 && c.NATS.Replicas != 3 && c.NATS.Replicas != 5 {
		bad("nats.replicas: %d (want 1, 3 or 5)", c.NATS.Replicas)
	}
	if l := c.NATS.Leaf; l != nil {
		if len(c.NATS.URLs) > 0 {
			bad("nats.leaf: a leaf node is the embedded server; it cannot go with nats.urls")
		}
		if len(l.HubURLs) == 0 {
			bad("nats.leaf.hub_urls: required (the hub's leaf node listeners)")
		}
		if err := events.ValidToken(l.Domain); err != nil {
			bad("nats.leaf.domain: %v", err)
		}
		if err := events.ValidToken(l.HubDomain); err != nil {
			bad("nats.leaf.hub_domain: %v", err)
		} else if l.HubDomain == l.Domain {
			bad("nats.leaf.domain: %q is the hub's domain too; each leaf needs its own", l.Domain)
		}
	}
	if a := c.DBService.MySQLListen; a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			bad("db_service.mysql_listen: %q is not host:port", a)
		} else if a == c.DBService.Listen && port != "0" {
			bad("db_service.mysql_listen: %q is db_service.listen too; MySQL clients need a port of their own", a)
		} else {
			mysql := false
			for _, d := range c.DBService.Databases {
				mysql = mysql || protocol.EngineOf(d.Protocol) == protocol.MySQL
			}
			if !mysql {
				bad("db_service.mysql_listen: set, but no database in db_service.databases has protocol mysql")
			}
		}
	}
	if c.Proxy.Enabled != nil && *c.Proxy.Enabled && c.Broker.Enabled != nil && !*c.Broker.Enabled {
		// The proxy role: a proxy of its own, in front of a broker elsewhere.
		if host, port, err := net.SplitHostPort(c.Proxy.BrokerAddr); err != nil || host == "" || port == "" || port == "0" {
			bad("proxy.broker_addr: %q is not host:port; a proxy without the broker (broker.enabled false) needs the broker's port", c.Proxy.BrokerAddr)
		}
		if len(c.DBService.Databases) > 0 {
			bad("db_service.databases: a proxy without the broker serves no database; run the agent in a process of its own")
		}
	} else if c.Proxy.BrokerAddr != "" || c.Proxy.JoinToken != "" || c.Proxy.BrokerCAPin != "" {
		bad("proxy.broker_addr, join_token, broker_ca_pin: only for a proxy without the broker (broker.enabled false, proxy.enabled true)")
	}
	for i, a := range c.DBService.ProxyAddrs {
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" || port == "0" {
			bad("db_service.proxy_addrs[%d]: %q is not host:port", i, a)
		}
	}
	if c.DBService.MaxConnections < 0 {
		bad("db_service.max_connections: %d is negative (0 means no limit)", c.DBService.MaxConnections)
	}
	if c.DBService.MaxConnectionsPerUser < 0 {
		bad("db_service.max_connections_per_user: %d is negative (0 means no limit)", c.DBService.MaxConnectionsPerUser)
	}
	seen := map[string]bool{}
	for i, d := range c.DBService.Databases {
		where := fmt.Sprintf("db_service.databases[%d]", i)
		if d.Name == "" {
			bad("%s.name: required", where)
		} else if seen[d.Name] {
			bad("%s.name: %q is used twice", where, d.Name)
		}
		seen[d.Name] = true
		if !protocol.Known(d.Protocol) {
			bad("%s.protocol: %q is not %s", where, d.Protocol, protocol.List())
		}
		if d.URI == "" {
			bad("%s.uri: required", where)
		}
		if !oneOf(d.TLS.Mode, "verify-full", "verify-ca", "insecure") {
			bad("%s.tls.mode: %q is not verify-full, verify-ca or insecure", where, d.TLS.Mode)
		}
		if !oneOf(d.AuditMode, "strict", "async") {
			bad("%s.audit_mode: %q is not strict or async", where, d.AuditMode)
		}
		if d.RefuseStartupParameters != nil && !protocol.Get(d.Protocol).StartupParameters {
			bad("%s.refuse_startup_parameters: only PostgreSQL and CockroachDB have startup parameters", where)
		}
		for j, n := range d.RefuseStartupParameters {
			if n == "" || strings.ContainsAny(n, " =\t") || strings.Contains(strings.TrimSuffix(n, "*"), "*") {
				bad("%s.refuse_startup_parameters[%d]: %q is not a parameter name or a prefix ending in *", where, j, n)
			}
		}
	}
	names := map[string]bool{}
	for i, e := range c.Exporters {
		where := fmt.Sprintf("exporters[%d]", i)
		if e.Name == "" {
			bad("%s.name: required", where)
		} else if names[e.Name] {
			bad("%s.name: %q is used twice", where, e.Name)
		}
		names[e.Name] = true
		if e.Type == "" {
			bad("%s.type: required", where)
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

func oneOf(v string, allowed ...string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}
