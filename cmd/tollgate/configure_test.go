package main

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/config"
)

var testPin = "sha256:" + strings.Repeat("0f", 32)

// configure runs `tollgate configure ARGS` in-process.
func configure(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	c := newConfigureCmd()
	var o, e bytes.Buffer
	c.SetOut(&o)
	c.SetErr(&e)
	c.SetArgs(args)
	c.SilenceUsage, c.SilenceErrors = true, true
	err = c.Execute()
	return o.String(), e.String(), err
}

// checked parses what configure wrote and runs start --check's checks on
// it for role.
func checked(t *testing.T, file, role string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(file))
	if err != nil {
		t.Fatalf("%v\n%s", err, file)
	}
	defer func(r []string) { flagRoles = r }(flagRoles)
	flagRoles = []string{role}
	var out bytes.Buffer
	if err := checkStart(&out, cfg); err != nil {
		t.Fatalf("start --check: %v\n%s", err, file)
	}
	if !strings.Contains(out.String(), "roles "+role+",") {
		t.Fatalf("start --check: %s", out.String())
	}
	return cfg
}

func TestConfigureAgent(t *testing.T) {
	out, _, err := configure(t, "agent", "--proxy=tollgate.example.com:3080", "--token=tok123", "--ca-pin="+strings.ToUpper(testPin[7:]),
		"--nats-url=tls://nats-1:4222,tls://nats-2:4222", "--nats-ca=/etc/tollgate/nats-ca.crt",
		"--db=orders=postgres://orders-db:5432", "--db=billing=mariadb://billing-db:3306", "--db=crm=sqlserver://crm:1433",
		"--db-ca=orders=/etc/tollgate/orders-ca.crt", "--cluster=prod", "--replicas=3")
	if err != nil {
		t.Fatal(err)
	}
	cfg := checked(t, out, "agent")
	d := cfg.DBService
	if cfg.ClusterName != "prod" || !slices.Equal(cfg.NATS.URLs, []string{"tls://nats-1:4222", "tls://nats-2:4222"}) ||
		cfg.NATS.CredentialsDir != "/etc/tollgate/nats-auth" || cfg.NATS.TLS.CAFile != "/etc/tollgate/nats-ca.crt" || cfg.NATS.Replicas != 3 {
		t.Errorf("nats %+v", cfg.NATS)
	}
	if cfg.Broker.Enabled == nil || *cfg.Broker.Enabled || !slices.Equal(d.ProxyAddrs, []string{"tollgate.example.com:3080"}) ||
		d.Listen != "" || d.JoinToken != "tok123" || d.BrokerCAPin != testPin {
		t.Errorf("db_service %+v", d)
	}
	want := []config.Database{
		{Name: "orders", Protocol: "postgres", URI: "orders-db:5432", TLS: config.DatabaseTLS{Mode: "verify-full", CACertFile: "/etc/tollgate/orders-ca.crt"}},
		{Name: "billing", Protocol: "mysql", URI: "billing-db:3306", TLS: config.DatabaseTLS{Mode: "verify-full"}},
		{Name: "crm", Protocol: "sqlserver", URI: "crm:1433", TLS: config.DatabaseTLS{Mode: "verify-full"}},
	}
	if len(d.Databases) != len(want) {
		t.Fatalf("databases %+v", d.Databases)
	}
	for i, w := range want {
		g := d.Databases[i]
		if g.Name != w.Name || g.Protocol != w.Protocol || g.URI != w.URI || g.TLS != w.TLS {
			t.Errorf("database %d: %+v, want %+v", i, g, w)
		}
	}
}

func TestConfigureProxyAndExporter(t *testing.T) {
	out, _, err := configure(t, "proxy", "--public-addr=tollgate.example.com:443", "--nats-listen=0.0.0.0:4250", "--log-format=json")
	if err != nil {
		t.Fatal(err)
	}
	cfg := checked(t, out, "broker")
	if cfg.Proxy.Listen != "0.0.0.0:3080" || cfg.Proxy.PublicAddr != "tollgate.example.com:443" || len(cfg.NATS.URLs) != 0 ||
		cfg.NATS.Embedded.Listen != "0.0.0.0:4250" || cfg.NATS.Replicas != 1 || cfg.Log.Format != "json" || cfg.DataDir != "/var/lib/tollgate" {
		t.Errorf("proxy configuration %+v", cfg)
	}

	out, _, err = configure(t, "exporter", "--name=siem", "--type=kafka", "--format=ocsf", "--nats-url=tls://nats:4222",
		"--set=brokers=[k1:9092, k2:9092]", "--set=topic=audit", "--set=tls.ca_file=/etc/kafka-ca.crt", "--set=batch_size=200",
		"--filter-type=db.session.*,access_request.>")
	if err != nil {
		t.Fatal(err)
	}
	cfg = checked(t, out, "exporter")
	if len(cfg.Exporters) != 1 {
		t.Fatalf("exporters %+v", cfg.Exporters)
	}
	e := cfg.Exporters[0]
	if e.Name != "siem" || e.Type != "kafka" || e.Format != "ocsf" || !slices.Equal(e.Filter.Types, []string{"db.session.*", "access_request.>"}) {
		t.Errorf("exporter %+v", e)
	}
	var settings struct {
		Brokers   []string          `yaml:"brokers"`
		Topic     string            `yaml:"topic"`
		TLS       map[string]string `yaml:"tls"`
		BatchSize int               `yaml:"batch_size"`
	}
	if err := e.Settings.Decode(&settings); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(settings.Brokers, []string{"k1:9092", "k2:9092"}) || settings.Topic != "audit" ||
		settings.TLS["ca_file"] != "/etc/kafka-ca.crt" || settings.BatchSize != 200 {
		t.Errorf("settings %+v", settings)
	}
}

// A written file is 0600 (it may hold a join token), is not overwritten
// without --force, and the real `tollgate start --check` accepts it.
func TestConfigureWritesAFileStartAccepts(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agent.yaml")
	args := []string{"agent", "--proxy=p.example:3080", "--token=t", "--ca-pin=" + testPin, "--nats-url=tls://n:4222",
		"--db=pg=postgres://pg:5432", "-o", file}
	if _, stderr, err := configure(t, args...); err != nil || !strings.Contains(stderr, "run: tollgate start --config="+file+" --roles=agent") {
		t.Fatalf("%v; stderr %q", err, stderr)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%v %v", st.Mode(), err)
	}
	if _, _, err := configure(t, args...); err == nil || !strings.Contains(err.Error(), "exists; --force overwrites it") {
		t.Fatalf("second write: %v", err)
	}
	if _, _, err := configure(t, append(args, "--force")...); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tollgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "start", "--check", "--config="+file, "--roles=agent").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration ok: cluster tollgate, roles agent, nats tls://n:4222") {
		t.Fatalf("start --check: %v\n%s", err, out)
	}
}

// An agent given no --nats-url reaches the event plane through its
// proxies: its file has no NATS servers of its own, and the check says so.
func TestConfigureAgentEventsThroughTheProxy(t *testing.T) {
	out, _, err := configure(t, "agent", "--proxy=p.example:3080", "--token=t", "--ca-pin="+testPin, "--db=pg=postgres://pg:5432")
	if err != nil {
		t.Fatal(err)
	}
	cfg := checked(t, out, "agent")
	if len(cfg.NATS.URLs) != 0 || !eventsViaProxy(cfg) {
		t.Fatalf("urls %v, through the proxy %v\n%s", cfg.NATS.URLs, eventsViaProxy(cfg), out)
	}
	defer func(r []string) { flagRoles = r }(flagRoles)
	flagRoles = []string{"agent"}
	var b strings.Builder
	if err := checkStart(&b, cfg); err != nil || !strings.Contains(b.String(), "nats through the proxy p.example:3080") {
		t.Fatalf("check: %v %q", err, b.String())
	}
}

// A proxy of its own joins the broker with a proxy token and reaches the
// event plane through the broker's port: no NATS servers in its file.
func TestConfigureSeparateProxy(t *testing.T) {
	out, _, err := configure(t, "proxy", "--public-addr=p2.example:3080", "--broker=b.example:3080", "--token=t", "--ca-pin="+testPin)
	if err != nil {
		t.Fatal(err)
	}
	cfg := checked(t, out, "proxy")
	if brokerEnabled(cfg) || cfg.Proxy.BrokerAddr != "b.example:3080" || cfg.Proxy.JoinToken != "t" ||
		cfg.Proxy.BrokerCAPin != testPin || len(cfg.NATS.URLs) != 0 || !proxyOnly(cfg) {
		t.Fatalf("separate proxy:\n%s", out)
	}
	defer func(r []string) { flagRoles = r }(flagRoles)
	flagRoles = []string{"proxy"}
	var b strings.Builder
	if err := checkStart(&b, cfg); err != nil || !strings.Contains(b.String(), "nats through the broker's port b.example:3080") {
		t.Fatalf("check: %v %q", err, b.String())
	}
}

func TestConfigureBadFlags(t *testing.T) {
	agent := []string{"agent", "--proxy=p:3080", "--token=t", "--ca-pin=" + testPin, "--nats-url=tls://n:4222"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agent"}, "--proxy: required"},
		{[]string{"agent", "--proxy=p"}, `--proxy: proxy address "p": want HOST:PORT`},
		{[]string{"agent", "--proxy=p:1"}, "--token: required"},
		{[]string{"agent", "--proxy=p:1", "--token=t"}, "--ca-pin: required"},
		{[]string{"agent", "--proxy=p:1", "--token=t", "--ca-pin=abc"}, `--ca-pin: CA pin "abc": want sha256: and 64 hex digits`},
		{agent, "--db: required"},
		{append(agent, "--db=orders"), `--db "orders": want NAME=PROTOCOL://HOST:PORT`},
		{append(agent, "--db=o=oracle://h:1521"), `protocol "oracle" is not postgres, cockroachdb, mysql, sqlserver or redis`},
		{append(agent, "--db=o=postgres://h"), `"h" is not HOST:PORT`},
		{append(agent, "--db=o=postgres://h:1", "--db=o=mysql://h:2"), `--db: "o" given twice`},
		{append(agent, "--db=o=postgres://h:1", "--db-ca=x=/ca"), "--db-ca x: no --db of that name"},
		{[]string{"agent", "--proxy=p:1", "--token=t", "--ca-pin=" + testPin, "--db=o=postgres://h:1", "--nats-ca=/ca"}, "--nats-ca: only with --nats-url"},
		{[]string{"exporter", "--name=x", "--type=file"}, "--nats-url: required"},
		{append(agent, "--db=o=postgres://h:1", "--audit-mode=lax"), `--audit-mode: "lax" is not strict or async`},
		{[]string{"proxy"}, "--public-addr: required"},
		{[]string{"proxy", "--public-addr=x:1", "--token=t"}, "--token and --ca-pin: only with --broker"},
		{[]string{"proxy", "--public-addr=x:1", "--broker=b"}, `--broker: `},
		{[]string{"proxy", "--public-addr=x:1", "--broker=b:1"}, "--token: required with --broker"},
		{[]string{"proxy", "--public-addr=x:1", "--broker=b:1", "--token=t"}, "--ca-pin: required with --broker"},
		{[]string{"proxy", "--public-addr=x:1", "--broker=b:1", "--token=t", "--ca-pin=x"}, "--ca-pin: "},
		{[]string{"proxy", "--public-addr=x"}, `--public-addr: proxy address "x": want HOST:PORT`},
		{[]string{"proxy", "--public-addr=x:1", "--nats-ca=/ca"}, "--nats-ca: only with --nats-url"},
		{[]string{"proxy", "--public-addr=x:1", "--nats-url=nats:4222"}, `--nats-url "nats:4222": want scheme://host:port`},
		{[]string{"proxy", "--public-addr=x:1", "--replicas=2"}, "nats.replicas: 2 (want 1, 3 or 5)"},
		{[]string{"exporter"}, "--name: required"},
		{[]string{"exporter", "--name=x"}, "--type: required: one of"},
		{[]string{"exporter", "--name=x", "--type=splunk"}, `--type: "splunk" is not a sink type (want one of`},
		{[]string{"exporter", "--name=x y", "--type=file", "--nats-url=tls://n:1"}, `name: "x y": want 1 to 64 letters`},
		{[]string{"exporter", "--name=x", "--type=file", "--nats-url=tls://n:1", "--format=xml"}, `.format: format "xml"`},
		{[]string{"exporter", "--name=x", "--type=file", "--nats-url=tls://n:1", "--set=path"}, `--set "path": want KEY=VALUE`},
		{[]string{"exporter", "--name=x", "--type=file", "--nats-url=tls://n:1", "--set=batch_size=many"}, "batch_size"},
		{[]string{"exporter", "--name=x", "--type=file", "--nats-url=tls://n:1", "--set=a=1", "--set=a.b=2"}, "--set a.b: a is a value, not a mapping"},
		{[]string{"exporter", "--name=x", "--type=file", "--nats-url=tls://n:1", "--filter-type=DB"}, `filter.types: "DB" is not an event type`},
		{[]string{"exporter", "--name=x", "--type=splunk_hec", "--nats-url=tls://n:1", "--set=urll=https://s:8088"}, `unknown key "exporters[0] (x).settings.urll"`},
	} {
		out, _, err := configure(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("configure %q: got %v, want an error with %q", tc.args, err, tc.want)
		}
		if out != "" {
			t.Errorf("configure %q wrote %q despite the error", tc.args, out)
		}
	}
}

// The files configure writes run: a broker with its proxy on an embedded
// NATS server, and an agent on "another machine" given only the proxy's
// address, a join token and the CA pin, which joins, reaches the event
// plane through the proxy and serves its database through its tunnel.
func TestConfigureOutputsRun(t *testing.T) {
	bin := authTestBinary(t)
	dir := t.TempDir()
	proxy, natsAddr, health := freeAddr(t), freeAddr(t), freeAddr(t)
	brokerFile, agentFile := filepath.Join(dir, "broker.yaml"), filepath.Join(dir, "agent.yaml")
	authRun(t, bin, false, "configure", "proxy", "--public-addr="+proxy, "--listen="+proxy, "--nats-listen="+natsAddr,
		"--data-dir="+filepath.Join(dir, "broker"), "-o", brokerFile)
	broker := startDaemon(t, bin, "start", "--config="+brokerFile, "--roles=broker", "--health-listen="+health)
	waitReady(t, health, broker)

	token := strings.TrimSpace(string(authRun(t, bin, false, "--config="+brokerFile, "tokens", "add", "--type=db")))
	cmd := exec.Command(bin, "--config="+brokerFile, "tokens", "add", "--type=db")
	cmd.Env = append(os.Environ(), "TOLLGATE_CONFIG=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pin := regexp.MustCompile(`broker_ca_pin: (sha256:[0-9a-f]{64})`).FindStringSubmatch(stderr.String())
	if pin == nil {
		t.Fatalf("tokens add printed no pin:\n%s", stderr.String())
	}
	// The agent is given the proxy, the token and the pin: it reaches the
	// event plane through the proxy too, with its host certificate.
	authRun(t, bin, false, "configure", "agent", "--proxy="+proxy, "--token="+token, "--ca-pin="+pin[1],
		"--db=orders=postgres://127.0.0.1:5432", "--data-dir="+filepath.Join(dir, "agent"), "-o", agentFile)
	agentHealth := freeAddr(t)
	agent := startDaemon(t, bin, "start", "--config="+agentFile, "--roles=agent", "--health-listen="+agentHealth)
	waitReady(t, agentHealth, agent)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := string(authRun(t, bin, false, "--config="+brokerFile, "db", "ls"))
		if regexp.MustCompile(`(?m)^orders +postgres .* online +\S+$`).MatchString(out) && strings.Contains(agent.String(), "tunnel: open") &&
			strings.Contains(agent.String(), "nats connected through the proxy") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's database is not registered live, or no tunnel to the proxy %s:\n%s\nagent log:\n%s", proxy, out, agent)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startDaemon starts bin with args until the test ends; its log goes to
// the returned buffer.
func startDaemon(t *testing.T, bin string, args ...string) *lockedBuffer {
	t.Helper()
	var log lockedBuffer
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TOLLGATE_CONFIG=")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("%v exited with %v after SIGTERM:\n%s", args, err, log.String())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("%v did not stop within 30s", args)
		}
	})
	return &log
}

// waitReady waits for /readyz at addr.
func waitReady(t *testing.T, addr string, log *lockedBuffer) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready at %s within 60s:\n%s", addr, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
