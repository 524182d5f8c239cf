package config

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParseFull(t *testing.T) {
	c, err := Parse([]byte(`
cluster_name: prod
data_dir: /var/lib/tollgate
nats:
  urls: [nats://a:4222, nats://b:4222]
  creds_file: /etc/tollgate/nats.creds
  replicas: 3
audit:
  mode: async
  ack_timeout: 5s
db_service:
  databases:
    - name: pg1
      protocol: postgres
      uri: localhost:5432
      static_labels: {env: prod}
      tls: {mode: verify-ca, ca_cert_file: /etc/ca.pem}
exporters:
  - name: siem
    type: splunk
    format: ocsf
    settings:
      url: https://hec:8088
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.ClusterName != "prod" || c.NATS.Replicas != 3 || c.Audit.AckTimeout.Std() != 5*time.Second {
		t.Fatalf("parsed %+v", c)
	}
	d := c.DBService.Databases[0]
	if d.StaticLabels["env"] != "prod" || d.TLS.Mode != "verify-ca" || d.AuditMode != "async" {
		t.Fatalf("database %+v", d)
	}
	if c.Exporters[0].Settings.Kind == 0 {
		t.Fatal("exporter settings not kept")
	}
}

func TestDefaults(t *testing.T) {
	c := Default()
	if c.NATS.Embedded.Listen != "127.0.0.1:4250" || c.Audit.Mode != "strict" || c.Audit.AckTimeout.Std() != 2*time.Second {
		t.Fatalf("defaults %+v", c)
	}
}

func TestErrorsNameKeyAndLine(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"cluster_name: a\nproxy:\n  listn: x\n", `line 3: unknown key "proxy.listn"`},
		{"bogus: 1\n", `line 1: unknown key "bogus"`},
		{"nats:\n  replicas: three\n", `line 2: key "nats.replicas" has the wrong type`},
		{"db_service:\n  databases:\n    - name: a\n      protocol: postgres\n      uri: x\n      static_labels: [a]\n", `line 6: key "db_service.databases[0].static_labels" has the wrong type`},
		{"audit:\n  ack_timeout: soon\n", `line 2: "soon" is not a duration`},
		{"db_service:\n  databases:\n    - name: a\n      protocol: oracle\n      uri: x\n", `db_service.databases[0].protocol: "oracle"`},
		{"cluster_name: a.b\n", `cluster_name:`},
		{"audit:\n  mode: sometimes\n", `audit.mode: "sometimes"`},
		{"db_service:\n  mysql_listen: 3037\n  databases:\n    - name: a\n      protocol: mysql\n      uri: x\n", `db_service.mysql_listen: "3037" is not host:port`},
		{"db_service:\n  listen: :3036\n  mysql_listen: :3036\n  databases:\n    - name: a\n      protocol: mysql\n      uri: x\n", `db_service.mysql_listen: ":3036" is db_service.listen too`},
		{"db_service:\n  mysql_listen: :3037\n  databases:\n    - name: a\n      protocol: postgres\n      uri: x\n", `no database in db_service.databases has protocol mysql`},
		{"db_service:\n  proxy_addrs: [proxy.example]\n", `db_service.proxy_addrs[0]: "proxy.example" is not host:port`},
		{"broker: {enabled: false}\nproxy: {enabled: true}\n", `proxy.broker_addr: "" is not host:port`},
		{"broker: {enabled: false}\nproxy: {enabled: true, broker_addr: b:3080}\ndb_service:\n  databases:\n    - name: a\n      protocol: postgres\n      uri: x\n", `a proxy without the broker serves no database`},
		{"proxy: {broker_addr: b:3080}\n", `only for a proxy without the broker`},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// With proxy_addrs the agent listens only where listen says.
func TestProxyAddrsLeaveListenUnset(t *testing.T) {
	c, err := Parse([]byte("db_service:\n  proxy_addrs: [proxy.example:3080]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DBService.Listen != "" || c.DBService.PublicAddr != "" || len(c.DBService.ProxyAddrs) != 1 {
		t.Fatalf("db_service %+v", c.DBService)
	}
	c, err = Parse([]byte("db_service:\n  listen: 0.0.0.0:3036\n  proxy_addrs: [proxy.example:3080]\n"))
	if err != nil || c.DBService.Listen != "0.0.0.0:3036" {
		t.Fatalf("db_service %+v, %v", c.DBService, err)
	}
	if Default().DBService.Listen != DefaultAgentAddr {
		t.Fatal("the default agent address is gone")
	}
}

func TestRefuseStartupParameters(t *testing.T) {
	base := "db_service:\n  databases:\n    - name: pg1\n      protocol: %s\n      uri: localhost:5432\n"
	c, err := Parse([]byte(strings.ReplaceAll(base, "%s", "postgres") + "      refuse_startup_parameters: [log_statement, \"pgaudit.*\"]\n    - name: pg2\n      protocol: postgres\n      uri: localhost:5433\n    - name: pg3\n      protocol: postgres\n      uri: localhost:5434\n      refuse_startup_parameters: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	dbs := c.DBService.Databases
	if got := strings.Join(dbs[0].RefuseStartupParameters, ","); got != "log_statement,pgaudit.*" {
		t.Fatalf("pg1 list %q", got)
	}
	if dbs[1].RefuseStartupParameters != nil || dbs[2].RefuseStartupParameters == nil || len(dbs[2].RefuseStartupParameters) != 0 {
		t.Fatalf("unset %v, empty %v", dbs[1].RefuseStartupParameters, dbs[2].RefuseStartupParameters)
	}
	for _, c := range []struct{ yaml, want string }{
		{strings.ReplaceAll(base, "%s", "mysql") + "      refuse_startup_parameters: [log_statement]\n", "only PostgreSQL"},
		{strings.ReplaceAll(base, "%s", "postgres") + "      refuse_startup_parameters: [\"log_statement=none\"]\n", "is not a parameter name"},
		{strings.ReplaceAll(base, "%s", "postgres") + "      refuse_startup_parameters: [\"*.x\"]\n", "is not a parameter name"},
		{strings.ReplaceAll(base, "%s", "postgres") + "      refuse_startup_parameter: [x]\n", `unknown key "db_service.databases[0].refuse_startup_parameter"`},
	} {
		if _, err := Parse([]byte(c.yaml)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.yaml, err, c.want)
		}
	}
}

// An engine's settings are kept as written for the engine to decode: this
// package does not know them.
func TestDatabaseSettingsKeptForTheEngine(t *testing.T) {
	c, err := Parse([]byte("db_service:\n  databases:\n    - name: my1\n      protocol: mysql\n      uri: localhost:3306\n      settings:\n        server_version: 8.0.36\n        anything: [1, 2]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := c.DBService.Databases[0].Settings
	if s.Kind != yaml.MappingNode || len(s.Content) != 4 || s.Content[0].Value != "server_version" || s.Content[1].Value != "8.0.36" {
		t.Fatalf("settings %+v", s)
	}
}
