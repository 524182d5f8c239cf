package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/protocol"
)

// `tollgate configure ROLE` writes a configuration for one role from flags,
// as an operator would otherwise copy from the documentation: an agent
// beside some databases joining a broker through its proxy, the broker
// with its proxy, or an exporter. What it writes is checked as `tollgate
// start --check --roles=ROLE` would check it, and nothing is written when
// that fails.
func init() { root.AddCommand(newConfigureCmd()) }

// configureOpts are the flags every role shares.
type configureOpts struct {
	output      string
	force       bool
	cluster     string
	dataDir     string
	natsURLs    []string
	natsCreds   string
	natsCA      string
	natsListen  string
	replicas    int
	auditMode   string
	logFormat   string
	needsExtern bool // the role cannot run on an embedded server of its own
	// viaProxy: without --nats-url the role reaches the event plane
	// through its proxies (an agent behind NAT, when the broker runs the
	// embedded server), so it has no NATS settings of its own.
	viaProxy bool
}

func (o *configureOpts) flags(c *cobra.Command, dataDir string) {
	f := c.Flags()
	f.StringVarP(&o.output, "output", "o", "-", "file to write (0600, it may hold a join token), or - for standard output")
	f.BoolVar(&o.force, "force", false, "overwrite the output file if it exists")
	f.StringVar(&o.cluster, "cluster", config.DefaultCluster, "cluster_name: the same for every part of one deployment")
	f.StringVar(&o.dataDir, "data-dir", dataDir, "data_dir of the process")
	f.StringSliceVar(&o.natsURLs, "nats-url", nil, "a NATS server of the event plane (repeat, or comma-separated), e.g. tls://nats-1:4222")
	f.StringVar(&o.natsCreds, "nats-credentials-dir", "/etc/tollgate/nats-auth", "folder with this role's nkey seed and the auditor's (tollgate auth nats --dir)")
	f.StringVar(&o.natsCA, "nats-ca", "", "CA file of the NATS servers' certificates (default: the system's roots)")
	if o.needsExtern {
		// The broker makes the streams; an agent or exporter only insists
		// on at least this many copies (a strict agent refuses statements
		// while AUDIT has fewer), so a default above 1 would stop it on a
		// single-node cluster.
		f.IntVar(&o.replicas, "replicas", 1, "the AUDIT replicas to insist on (1, 3 or 5): a strict agent refuses statements while the stream has fewer")
	} else {
		f.IntVar(&o.replicas, "replicas", 0, "replicas of the AUDIT and STATE streams the broker makes: 1, 3 or 5 (default 3 with --nats-url, else 1)")
	}
	f.StringVar(&o.auditMode, "audit-mode", "strict", "strict (no statement before its event is stored) or async")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
}

// base is the part of the document every role has.
func (o *configureOpts) base() (*yamlMap, error) {
	if o.auditMode != "strict" && o.auditMode != "async" {
		return nil, fmt.Errorf("--audit-mode: %q is not strict or async", o.auditMode)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return nil, fmt.Errorf("--log-format: %q is not text or json", o.logFormat)
	}
	m := &yamlMap{}
	m.set("cluster_name", o.cluster)
	m.set("data_dir", o.dataDir)
	n := &yamlMap{}
	switch {
	case len(o.natsURLs) > 0:
		for i, u := range o.natsURLs {
			if !strings.Contains(u, "://") {
				return nil, fmt.Errorf("--nats-url %q: want scheme://host:port, e.g. tls://nats-1:4222", o.natsURLs[i])
			}
		}
		n.set("urls", o.natsURLs)
		n.set("credentials_dir", o.natsCreds)
		if o.natsCA != "" {
			n.set("tls", (&yamlMap{}).set("ca_file", o.natsCA))
		}
		if o.replicas == 0 {
			o.replicas = 3
		}
	case o.viaProxy:
		if o.natsCA != "" {
			return nil, errors.New("--nats-ca: only with --nats-url (without it the events go through the proxy)")
		}
	case o.needsExtern:
		return nil, errors.New("--nats-url: required: this role shares the broker's NATS cluster (tls://HOST:4222)")
	default:
		if o.natsCA != "" {
			return nil, errors.New("--nats-ca: only with --nats-url (the embedded server makes its own certificate)")
		}
		if _, err := api.ServerName(o.natsListen); err != nil {
			return nil, fmt.Errorf("--nats-listen: %w", err)
		}
		n.set("embedded", (&yamlMap{}).set("listen", o.natsListen))
		if o.replicas == 0 {
			o.replicas = 1
		}
	}
	n.set("replicas", o.replicas)
	m.set("nats", n)
	m.set("audit", (&yamlMap{}).set("mode", o.auditMode))
	m.set("log", (&yamlMap{}).set("format", o.logFormat))
	return m, nil
}

// finish checks doc as `tollgate start --check --roles=role` does and
// writes it with a header naming the command that runs it.
func (o *configureOpts) finish(cmd *cobra.Command, role string, doc *yamlMap) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Tollgate %s, written by `tollgate configure %s`.\n", role, cmd.Name())
	fmt.Fprintf(&b, "# Run it with: tollgate start --config=FILE --roles=%s\n", role)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc.node()); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	cfg, err := config.Parse(b.Bytes())
	if err != nil {
		return fmt.Errorf("the configuration would be refused: %w", err)
	}
	saved := flagRoles
	flagRoles = []string{role}
	err = checkStart(io.Discard, cfg)
	flagRoles = saved
	if err != nil {
		return fmt.Errorf("the configuration would be refused: %w", err)
	}
	if o.output == "-" {
		_, err := cmd.OutOrStdout().Write(b.Bytes())
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if o.force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(o.output, flags, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("--output %s exists; --force overwrites it", o.output)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s; run: tollgate start --config=%s --roles=%s\n", o.output, o.output, role)
	return nil
}

func newConfigureCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "configure",
		Short: "Write a checked configuration for one role (agent, proxy, exporter) from flags",
	}
	c.AddCommand(configureAgentCmd(), configureProxyCmd(), configureExporterCmd())
	return c
}

func configureAgentCmd() *cobra.Command {
	o := &configureOpts{needsExtern: true, viaProxy: true}
	var proxies, dbs, dbCAs []string
	var token, pin, listen string
	c := &cobra.Command{
		Use:   "agent",
		Short: "An agent beside databases, joining the broker through its proxy with a join token",
		Example: `  tollgate configure agent --proxy=tollgate.example.com:3080 \
    --token=TOKEN --ca-pin=sha256:HEX \
    --db=orders=postgres://orders-db:5432 --db=billing=mysql://billing-db:3306 \
    -o /etc/tollgate/agent.yaml
  # the same, with the broker on an external NATS cluster the agent reaches itself:
  tollgate configure agent ... --nats-url=tls://nats-1:4222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(proxies) == 0 {
				return errors.New("--proxy: required: the proxy's address (HOST:PORT) the agent keeps its tunnel with")
			}
			for _, p := range proxies {
				if _, err := api.ServerName(p); err != nil {
					return fmt.Errorf("--proxy: %w", err)
				}
			}
			if token == "" {
				return errors.New("--token: required: a join token from `tollgate tokens add --type=db`")
			}
			if pin == "" {
				return errors.New("--ca-pin: required: the broker's host CA pin (sha256:…) that `tollgate tokens add` prints")
			}
			p, err := api.ParsePin(pin)
			if err != nil {
				return fmt.Errorf("--ca-pin: %w", err)
			}
			if len(dbs) == 0 {
				return errors.New("--db: required: at least one database, NAME=PROTOCOL://HOST:PORT")
			}
			cas := map[string]string{}
			for _, s := range dbCAs {
				name, file, ok := strings.Cut(s, "=")
				if !ok || name == "" || file == "" {
					return fmt.Errorf("--db-ca %q: want NAME=FILE", s)
				}
				cas[name] = file
			}
			var list []any
			seen := map[string]bool{}
			for _, s := range dbs {
				d, err := parseDBFlag(s)
				if err != nil {
					return err
				}
				if seen[d.Name] {
					return fmt.Errorf("--db: %q given twice", d.Name)
				}
				seen[d.Name] = true
				m := (&yamlMap{}).set("name", d.Name).set("protocol", d.Protocol).set("uri", d.URI)
				if f, ok := cas[d.Name]; ok {
					m.set("tls", (&yamlMap{}).set("mode", "verify-full").set("ca_cert_file", f))
					delete(cas, d.Name)
				}
				list = append(list, m)
			}
			for name := range cas {
				return fmt.Errorf("--db-ca %s: no --db of that name", name)
			}
			doc, err := o.base()
			if err != nil {
				return err
			}
			doc.set("broker", (&yamlMap{}).set("enabled", false))
			doc.set("proxy", (&yamlMap{}).set("enabled", false))
			svc := &yamlMap{}
			if listen != "" {
				svc.set("listen", listen)
			}
			svc.set("proxy_addrs", proxies)
			svc.set("join_token", token)
			svc.set("broker_ca_pin", p)
			svc.set("databases", list)
			doc.set("db_service", svc)
			return o.finish(cmd, "agent", doc)
		},
	}
	o.flags(c, "/var/lib/tollgate/agent")
	f := c.Flags()
	f.StringSliceVar(&proxies, "proxy", nil, "the proxy (HOST:PORT) to keep a reverse tunnel with (repeat for several)")
	f.StringVar(&token, "token", "", "join token from `tollgate tokens add --type=db`")
	f.StringVar(&pin, "ca-pin", "", "the broker's host CA pin, sha256:HEX, as `tollgate tokens add` prints it")
	f.StringArrayVar(&dbs, "db", nil, "a database: NAME=PROTOCOL://HOST:PORT, PROTOCOL one of postgres, cockroachdb, mysql (or mariadb), sqlserver (repeat)")
	f.StringArrayVar(&dbCAs, "db-ca", nil, "NAME=FILE: the CA that signed database NAME's certificate (default: the system's roots)")
	f.StringVar(&listen, "listen", "", "also accept clients directly on HOST:PORT (default: only through the proxy's tunnel)")
	return c
}

// parseDBFlag reads NAME=PROTOCOL://HOST:PORT.
func parseDBFlag(s string) (config.Database, error) {
	const want = "want NAME=PROTOCOL://HOST:PORT, e.g. orders=postgres://orders-db:5432"
	name, uri, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return config.Database{}, fmt.Errorf("--db %q: %s", s, want)
	}
	scheme, hostport, ok := strings.Cut(uri, "://")
	if !ok {
		return config.Database{}, fmt.Errorf("--db %q: no protocol; %s", s, want)
	}
	p, ok := protocol.Resolve(scheme)
	if !ok {
		return config.Database{}, fmt.Errorf("--db %q: protocol %q is not %s", s, scheme, protocol.List())
	}
	proto := p.Name
	if host, port, err := net.SplitHostPort(hostport); err != nil || host == "" || port == "" {
		return config.Database{}, fmt.Errorf("--db %q: %q is not HOST:PORT; %s", s, hostport, want)
	}
	return config.Database{Name: name, Protocol: proto, URI: hostport}, nil
}

func configureProxyCmd() *cobra.Command {
	o := &configureOpts{}
	var listen, public, broker, token, pin string
	c := &cobra.Command{
		Use:   "proxy",
		Short: "The broker with its proxy, or with --broker a proxy of its own that joins a broker",
		Example: `  tollgate configure proxy --public-addr=tollgate.example.com:3080 -o /etc/tollgate/tollgate.yaml
  tollgate configure proxy --public-addr=tollgate.example.com:3080 \
    --nats-url=tls://nats-1:4222,tls://nats-2:4222,tls://nats-3:4222 --nats-ca=/etc/tollgate/nats-ca.crt
  # a second proxy on its own machine, joined with ` + "`tollgate tokens add --type=proxy`" + `:
  tollgate configure proxy --public-addr=proxy-2.example.com:3080 --broker=tollgate.example.com:3080 \
    --token=TOKEN --ca-pin=sha256:HEX -o /etc/tollgate/proxy.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := api.ServerName(listen); err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			if public == "" {
				return errors.New("--public-addr: required: HOST:PORT users and agents reach the proxy at (its certificate names HOST)")
			}
			if _, err := api.ServerName(public); err != nil {
				return fmt.Errorf("--public-addr: %w", err)
			}
			if broker == "" {
				if token != "" || pin != "" {
					return errors.New("--token and --ca-pin: only with --broker (a proxy that joins a broker)")
				}
				doc, err := o.base()
				if err != nil {
					return err
				}
				doc.set("broker", (&yamlMap{}).set("enabled", true))
				doc.set("proxy", (&yamlMap{}).set("enabled", true).set("listen", listen).set("public_addr", public))
				doc.set("db_service", (&yamlMap{}).set("enabled", false))
				return o.finish(cmd, "broker", doc)
			}
			// A proxy of its own: it joins the broker with a proxy token
			// and, without --nats-url, reaches the event plane through the
			// broker's port.
			if _, err := api.ServerName(broker); err != nil {
				return fmt.Errorf("--broker: %w", err)
			}
			if token == "" {
				return errors.New("--token: required with --broker: a join token from `tollgate tokens add --type=proxy`")
			}
			if pin == "" {
				return errors.New("--ca-pin: required with --broker: the broker_ca_pin `tollgate tokens add` prints")
			}
			if _, err := api.ParsePin(pin); err != nil {
				return fmt.Errorf("--ca-pin: %w", err)
			}
			o.viaProxy = true
			if o.replicas == 0 {
				o.replicas = 1
			}
			doc, err := o.base()
			if err != nil {
				return err
			}
			doc.set("broker", (&yamlMap{}).set("enabled", false))
			doc.set("proxy", (&yamlMap{}).set("enabled", true).set("listen", listen).set("public_addr", public).
				set("broker_addr", broker).set("join_token", token).set("broker_ca_pin", pin))
			doc.set("db_service", (&yamlMap{}).set("enabled", false))
			return o.finish(cmd, "proxy", doc)
		},
	}
	o.flags(c, "/var/lib/tollgate")
	c.Flags().StringVar(&listen, "listen", "0.0.0.0:3080", "HOST:PORT the proxy listens on")
	// Agents and exporters on other machines reach an embedded server only
	// if it listens beyond loopback.
	c.Flags().StringVar(&o.natsListen, "nats-listen", fmt.Sprintf("127.0.0.1:%d", config.DefaultNATSPort),
		"without --nats-url: HOST:PORT the embedded NATS server listens on (TLS, every part authenticated)")
	c.Flags().StringVar(&public, "public-addr", "", "HOST:PORT users and agents reach the proxy at")
	c.Flags().StringVar(&broker, "broker", "", "a proxy of its own: HOST:PORT of the broker's proxy port it joins and forwards the API to")
	c.Flags().StringVar(&token, "token", "", "with --broker: a join token from `tollgate tokens add --type=proxy`")
	c.Flags().StringVar(&pin, "ca-pin", "", "with --broker: the broker_ca_pin (sha256:HEX) `tollgate tokens add` prints")
	return c
}

func configureExporterCmd() *cobra.Command {
	o := &configureOpts{needsExtern: true}
	var name, typ, format string
	var sets, types []string
	c := &cobra.Command{
		Use:   "exporter",
		Short: "An exporter delivering the audit stream to a SIEM (file, splunk_hec, kafka, syslog)",
		Example: `  tollgate configure exporter --name=splunk --type=splunk_hec --format=native \
    --set url=https://splunk:8088 --set token_file=/etc/tollgate/hec-token \
    --nats-url=tls://nats-1:4222 -o /etc/tollgate/exporter.yaml
  tollgate configure exporter --name=kafka --type=kafka --set 'brokers=[k1:9092,k2:9092]' --set topic=audit ...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return errors.New("--name: required: the exporter's name (its durable consumer is named for it)")
			}
			if typ == "" {
				return fmt.Errorf("--type: required: one of %s", strings.Join(exporters.Types(), ", "))
			}
			if !slices.Contains(exporters.Types(), typ) {
				return fmt.Errorf("--type: %q is not a sink type (want one of %s)", typ, strings.Join(exporters.Types(), ", "))
			}
			settings := &yamlMap{}
			for _, s := range sets {
				k, v, ok := strings.Cut(s, "=")
				if !ok || k == "" {
					return fmt.Errorf("--set %q: want KEY=VALUE (a YAML value: 500, true, [a, b])", s)
				}
				var n yaml.Node
				if err := yaml.Unmarshal([]byte(v), &n); err != nil {
					return fmt.Errorf("--set %s: %q is not a YAML value: %w", k, v, err)
				}
				val := any(v)
				if len(n.Content) == 1 {
					val = n.Content[0]
				}
				if err := settings.setPath(strings.Split(k, "."), val); err != nil {
					return fmt.Errorf("--set %s: %w", k, err)
				}
			}
			doc, err := o.base()
			if err != nil {
				return err
			}
			doc.set("broker", (&yamlMap{}).set("enabled", false))
			doc.set("proxy", (&yamlMap{}).set("enabled", false))
			doc.set("db_service", (&yamlMap{}).set("enabled", false))
			e := (&yamlMap{}).set("name", name).set("type", typ).set("format", format)
			if len(types) > 0 {
				e.set("filter", (&yamlMap{}).set("types", types))
			}
			if len(settings.keys) > 0 {
				e.set("settings", settings)
			}
			doc.set("exporters", []any{e})
			return o.finish(cmd, "exporter", doc)
		},
	}
	o.flags(c, "/var/lib/tollgate/exporter")
	f := c.Flags()
	f.StringVar(&name, "name", "", "the exporter's name")
	f.StringVar(&typ, "type", "", "the sink: "+strings.Join(exporters.Types(), ", "))
	f.StringVar(&format, "format", "native", "native, cloudevents or ocsf")
	f.StringArrayVar(&sets, "set", nil, "a sink or delivery setting, KEY=VALUE (KEY may be dotted: tls.ca_file; VALUE is YAML: 500, true, [a, b]) (repeat)")
	f.StringSliceVar(&types, "filter-type", nil, "deliver only these event types (prefixes with *, e.g. db.session.*)")
	return c
}

// yamlMap is a YAML mapping that keeps the order keys were set in, so the
// file reads in the order the documentation explains it.
type yamlMap struct {
	keys []string
	vals map[string]any
}

func (m *yamlMap) set(k string, v any) *yamlMap {
	if m.vals == nil {
		m.vals = map[string]any{}
	}
	if _, ok := m.vals[k]; !ok {
		m.keys = append(m.keys, k)
	}
	m.vals[k] = v
	return m
}

// setPath sets a dotted key, making the mappings on the way.
func (m *yamlMap) setPath(path []string, v any) error {
	if len(path) == 1 {
		if _, ok := m.vals[path[0]]; ok {
			return errors.New("given twice")
		}
		m.set(path[0], v)
		return nil
	}
	sub, ok := m.vals[path[0]].(*yamlMap)
	if !ok {
		if _, taken := m.vals[path[0]]; taken {
			return fmt.Errorf("%s is a value, not a mapping", path[0])
		}
		sub = &yamlMap{}
		m.set(path[0], sub)
	}
	return sub.setPath(path[1:], v)
}

func (m *yamlMap) node() *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	for _, k := range m.keys {
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k}, toNode(m.vals[k]))
	}
	return n
}

func toNode(v any) *yaml.Node {
	switch v := v.(type) {
	case *yamlMap:
		return v.node()
	case *yaml.Node:
		return v
	case []any:
		n := &yaml.Node{Kind: yaml.SequenceNode}
		for _, e := range v {
			n.Content = append(n.Content, toNode(e))
		}
		return n
	}
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		panic(err) // only strings, ints, bools and their slices reach here
	}
	if n.Kind == yaml.SequenceNode {
		n.Style = yaml.FlowStyle
	}
	return &n
}
