package helm

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/nats-io/nkeys"

	"github.com/tollgate-db/tollgate/config"
)

const namespace = "db-access"

// Seeds as `tollgate auth nats` writes them: one nkey user seed per part.
var brokerSeed, agentSeed, exporterSeed, auditorSeed = newSeed(), newSeed(), newSeed(), newSeed()

func newSeed() string {
	kp, err := nkeys.CreateUser()
	if err != nil {
		panic(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		panic(err)
	}
	return string(seed)
}

// values is a complete release: broker, an agent for two databases and an
// exporter, on a 3-node NATS cluster with its CA.
func values() map[string]any {
	return map[string]any{
		"image":       map[string]any{"repository": "registry.example/tollgate", "tag": "1.2.0"},
		"clusterName": "prod",
		"nats": map[string]any{
			"urls":     []any{"tls://nats-0.nats:4222", "tls://nats-1.nats:4222", "tls://nats-2.nats:4222"},
			"caSecret": "nats-ca",
			"credentials": map[string]any{"seeds": map[string]any{
				"broker": brokerSeed, "agent": agentSeed, "exporter": exporterSeed, "auditor": auditorSeed,
			}},
		},
		"agent": map[string]any{
			"enabled":     true,
			"joinToken":   "3f2a9c0d1e",
			"brokerCAPin": "sha256:" + strings.Repeat("ab", 32),
			"databases": []any{
				map[string]any{"name": "orders", "protocol": "postgres", "uri": "orders-db:5432",
					"tls": map[string]any{"mode": "verify-full", "ca_cert_file": "/etc/tollgate/extra/orders-ca.crt"}},
				map[string]any{"name": "billing", "protocol": "mysql", "uri": "billing-db:3306"},
			},
			"extraVolumes":      []any{map[string]any{"name": "extra", "secret": map[string]any{"secretName": "db-cas"}}},
			"extraVolumeMounts": []any{map[string]any{"name": "extra", "mountPath": "/etc/tollgate/extra", "readOnly": true}},
		},
		"exporter": map[string]any{
			"enabled":  true,
			"replicas": 2,
			"exporters": []any{map[string]any{
				"name": "archive", "type": "file", "format": "ocsf",
				"settings": map[string]any{"path": "/var/lib/tollgate/audit.jsonl", "batch_size": 500},
			}},
		},
	}
}

var (
	chartOnce sync.Once
	theChart  *chart.Chart
	chartErr  error
)

// render renders the chart as `helm install tg ./tollgate -n db-access`
// would with vals, and returns the manifests by template name.
func render(t *testing.T, vals map[string]any) (map[string]string, error) {
	t.Helper()
	chartOnce.Do(func() { theChart, chartErr = loader.Load("tollgate") })
	if chartErr != nil {
		t.Fatalf("load chart: %v", chartErr)
	}
	rv, err := util.ToRenderValues(theChart, vals, common.ReleaseOptions{Name: "tg", Namespace: namespace, IsInstall: true}, nil)
	if err != nil {
		return nil, err
	}
	var e engine.Engine
	e.Strict = true
	return e.RenderWithContext(context.Background(), theChart, rv)
}

// object is one rendered manifest decoded into its API type.
type object struct {
	kind, name string
	obj        any
	source     string
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// decodeAll decodes every manifest strictly into its Kubernetes API type:
// an unknown or misplaced field is an error, as the API server would
// refuse it.
func decodeAll(t *testing.T, out map[string]string) []object {
	t.Helper()
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	var objs []object
	for _, n := range names {
		if !strings.HasSuffix(n, ".yaml") {
			continue
		}
		for _, doc := range docSep.Split(out[n], -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s: %v\n%s", n, err, doc)
			}
			var o any
			switch tm.APIVersion + "/" + tm.Kind {
			case "v1/ConfigMap":
				o = &corev1.ConfigMap{}
			case "v1/Secret":
				o = &corev1.Secret{}
			case "v1/Service":
				o = &corev1.Service{}
			case "v1/PersistentVolumeClaim":
				o = &corev1.PersistentVolumeClaim{}
			case "apps/v1/Deployment":
				o = &appsv1.Deployment{}
			default:
				t.Fatalf("%s: unexpected object %s %s", n, tm.APIVersion, tm.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), o); err != nil {
				t.Fatalf("%s: %s does not decode strictly: %v\n%s", n, tm.Kind, err, doc)
			}
			meta := o.(metav1.ObjectMetaAccessor).GetObjectMeta()
			if meta.GetName() == "" || len(meta.GetName()) > 63 {
				t.Errorf("%s: %s name %q", n, tm.Kind, meta.GetName())
			}
			objs = append(objs, object{kind: tm.Kind, name: meta.GetName(), obj: o, source: n})
		}
	}
	return objs
}

func stripComments(doc string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func find[T any](t *testing.T, objs []object, kind, name string) *T {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			return o.obj.(*T)
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

func TestChartRendersValidObjects(t *testing.T) {
	out, err := render(t, values())
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, out)
	var got []string
	for _, o := range objs {
		got = append(got, o.kind+"/"+o.name)
	}
	sort.Strings(got)
	want := []string{
		"ConfigMap/tg-tollgate-broker",
		"Deployment/tg-tollgate-agent", "Deployment/tg-tollgate-broker", "Deployment/tg-tollgate-exporter",
		"PersistentVolumeClaim/tg-tollgate-agent-data", "PersistentVolumeClaim/tg-tollgate-broker-data",
		"Secret/tg-tollgate-agent", "Secret/tg-tollgate-exporter",
		"Secret/tg-tollgate-nats-agent", "Secret/tg-tollgate-nats-auditor", "Secret/tg-tollgate-nats-broker", "Secret/tg-tollgate-nats-exporter",
		"Service/tg-tollgate-exporter-metrics", "Service/tg-tollgate-proxy",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("objects:\n got %q\nwant %q", got, want)
	}

	// Each event-plane identity in its own Secret, holding the seed given.
	for part, seed := range map[string]string{"broker": brokerSeed, "agent": agentSeed, "exporter": exporterSeed, "auditor": auditorSeed} {
		s := find[corev1.Secret](t, objs, "Secret", "tg-tollgate-nats-"+part)
		if len(s.StringData) != 1 || s.StringData[part+".nk"] != seed {
			t.Errorf("Secret of %s holds %v", part, s.StringData)
		}
	}

	roles := map[string][]string{ // role → the seeds its pod may read
		"broker":   {"broker.nk", "auditor.nk"},
		"agent":    {"agent.nk", "auditor.nk"},
		"exporter": {"exporter.nk", "auditor.nk"},
	}
	for role, seeds := range roles {
		t.Run(role, func(t *testing.T) {
			d := find[appsv1.Deployment](t, objs, "Deployment", "tg-tollgate-"+role)
			checkPod(t, objs, d, role, seeds)
		})
	}
	if r := *find[appsv1.Deployment](t, objs, "Deployment", "tg-tollgate-exporter").Spec.Replicas; r != 2 {
		t.Errorf("exporter replicas %d", r)
	}
	svc := find[corev1.Service](t, objs, "Service", "tg-tollgate-proxy")
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 3080 || svc.Spec.Ports[0].TargetPort.StrVal != "proxy" {
		t.Errorf("proxy Service ports %+v", svc.Spec.Ports)
	}
}

// checkPod checks the pod of role's Deployment: non-root, read-only root
// file system, nothing more than it needs, probes on a port it declares,
// every volume it mounts defined and every object it names rendered.
func checkPod(t *testing.T, objs []object, d *appsv1.Deployment, role string, seeds []string) {
	t.Helper()
	sel := d.Spec.Selector.MatchLabels
	for k, v := range sel {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod's labels %v", k, v, d.Spec.Template.Labels)
		}
	}
	if sel["app.kubernetes.io/component"] != role {
		t.Errorf("selector %v", sel)
	}
	p := d.Spec.Template.Spec
	if p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token it has no use for")
	}
	ps := p.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser != 10001 ||
		ps.FSGroup == nil || *ps.FSGroup != 10001 || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
		// Always would widen the CA keys' mode at every start.
		ps.FSGroupChangePolicy == nil || *ps.FSGroupChangePolicy != corev1.FSGroupChangeOnRootMismatch {
		t.Errorf("pod securityContext %+v", ps)
	}
	if len(p.Containers) != 1 {
		t.Fatalf("%d containers", len(p.Containers))
	}
	c := p.Containers[0]
	if c.Image != "registry.example/tollgate:1.2.0" {
		t.Errorf("image %q", c.Image)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Privileged == nil || *sc.Privileged || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("container securityContext %+v", sc)
	}
	if !slices.Contains(c.Args, "--roles="+role) || !slices.Contains(c.Args, "--config=/etc/tollgate/config/tollgate.yaml") ||
		!slices.Contains(c.Args, "--health-listen=0.0.0.0:8081") {
		t.Errorf("args %q", c.Args)
	}
	ports := map[string]int32{}
	for _, cp := range c.Ports {
		ports[cp.Name] = cp.ContainerPort
	}
	for name, pr := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			t.Errorf("%s probe %+v", name, pr)
			continue
		}
		if pr.HTTPGet.Port.StrVal != "health" || ports["health"] != 8081 {
			t.Errorf("%s probe on port %v; container ports %v", name, pr.HTTPGet.Port, ports)
		}
		want := "/healthz"
		if name == "readiness" {
			want = "/readyz"
		}
		if pr.HTTPGet.Path != want {
			t.Errorf("%s probe path %q", name, pr.HTTPGet.Path)
		}
	}

	vols := map[string]corev1.Volume{}
	for _, v := range p.Volumes {
		vols[v.Name] = v
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		if _, ok := vols[m.Name]; !ok {
			t.Errorf("mount %s has no volume", m.Name)
		}
		mounts[m.MountPath] = m.Name
	}
	// What a read-only root file system leaves writable: the data dir and
	// /tmp, nothing else.
	for path, name := range mounts {
		writable := !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == path && m.ReadOnly })
		if writable != (path == "/var/lib/tollgate" || path == "/tmp") {
			t.Errorf("mount %s (%s) writable=%v", path, name, writable)
		}
	}
	if mounts["/etc/tollgate/nats-auth"] != "nats-auth" || mounts["/etc/tollgate/nats-ca"] != "nats-ca" || mounts["/etc/tollgate/config"] != "config" {
		t.Errorf("mounts %v", mounts)
	}
	// The pod reads only its own seed and the auditor's.
	var got []string
	for _, src := range vols["nats-auth"].Projected.Sources {
		if src.Secret == nil {
			t.Fatalf("nats-auth source %+v", src)
		}
		find[corev1.Secret](t, objs, "Secret", src.Secret.Name)
		for _, it := range src.Secret.Items {
			got = append(got, it.Path)
		}
	}
	if !slices.Equal(got, seeds) {
		t.Errorf("seeds mounted %q, want %q", got, seeds)
	}
	if m := vols["nats-auth"].Projected.DefaultMode; m == nil || *m&0o007 != 0 {
		t.Errorf("seeds readable by others: mode %o", *m)
	}
	if v := vols["nats-ca"]; v.Secret == nil || v.Secret.SecretName != "nats-ca" {
		t.Errorf("nats-ca volume %+v", v)
	}
	if dv := vols["data"]; role == "exporter" && dv.EmptyDir == nil {
		t.Errorf("exporter data volume %+v", dv)
	} else if role != "exporter" {
		if dv.PersistentVolumeClaim == nil {
			t.Fatalf("%s data volume %+v", role, dv)
		}
		find[corev1.PersistentVolumeClaim](t, objs, "PersistentVolumeClaim", dv.PersistentVolumeClaim.ClaimName)
		if dv.PersistentVolumeClaim.ClaimName != "tg-tollgate-"+role+"-data" || dv.PersistentVolumeClaim.ReadOnly {
			t.Errorf("data claim %+v", dv.PersistentVolumeClaim)
		}
		if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || *d.Spec.Replicas != 1 {
			t.Errorf("%s: strategy %v replicas %d: two pods would share its data dir", role, d.Spec.Strategy.Type, *d.Spec.Replicas)
		}
	}

	// The configuration the pod reads, and what it says.
	file := configOf(t, objs, vols["config"])
	if d.Spec.Template.Annotations["checksum/config"] == "" {
		t.Error("no checksum/config annotation: a changed configuration would not roll the pod")
	}
	cfg, err := config.Parse([]byte(file))
	if err != nil {
		t.Fatalf("rendered configuration refused: %v\n%s", err, file)
	}
	if cfg.ClusterName != "prod" || cfg.DataDir != "/var/lib/tollgate" || len(cfg.NATS.URLs) != 3 ||
		cfg.NATS.CredentialsDir != "/etc/tollgate/nats-auth" || cfg.NATS.TLS.CAFile != "/etc/tollgate/nats-ca/ca.crt" ||
		cfg.NATS.Replicas != 3 || cfg.Audit.Mode != "strict" || cfg.Log.Format != "json" {
		t.Errorf("configuration %+v", cfg)
	}
	proxyAddr := "tg-tollgate-proxy." + namespace + ".svc:3080"
	switch role {
	case "broker":
		if cfg.Proxy.Listen != "0.0.0.0:3080" || cfg.Proxy.PublicAddr != proxyAddr || len(cfg.Exporters) != 0 {
			t.Errorf("broker configuration %+v", cfg)
		}
	case "agent":
		db := cfg.DBService
		if !slices.Equal(db.ProxyAddrs, []string{proxyAddr}) || db.Listen != "" || db.JoinToken != "3f2a9c0d1e" ||
			!strings.HasPrefix(db.BrokerCAPin, "sha256:abab") || len(db.Databases) != 2 ||
			db.Databases[0].TLS.CACertFile != "/etc/tollgate/extra/orders-ca.crt" || db.Databases[1].Protocol != "mysql" {
			t.Errorf("agent configuration %+v", db)
		}
		if mounts["/etc/tollgate/extra"] != "extra" {
			t.Errorf("extra mount missing: %v", mounts)
		}
	case "exporter":
		if len(cfg.Exporters) != 1 || cfg.Exporters[0].Type != "file" || cfg.Exporters[0].Format != "ocsf" ||
			!slices.Contains(c.Args, "--metrics-listen=0.0.0.0:9090") || ports["metrics"] != 9090 {
			t.Errorf("exporter configuration %+v, args %q", cfg.Exporters, c.Args)
		}
	}
	// `tollgate start --check` accepts it for the role the pod runs.
	out := startCheck(t, file, role)
	if !strings.Contains(out, "roles "+role+",") || !strings.Contains(out, "cluster prod") {
		t.Errorf("start --check: %s", out)
	}
}

// configOf is tollgate.yaml of the config volume's ConfigMap or Secret.
func configOf(t *testing.T, objs []object, v corev1.Volume) string {
	t.Helper()
	switch {
	case v.ConfigMap != nil:
		return find[corev1.ConfigMap](t, objs, "ConfigMap", v.ConfigMap.Name).Data["tollgate.yaml"]
	case v.Secret != nil:
		return find[corev1.Secret](t, objs, "Secret", v.Secret.SecretName).StringData["tollgate.yaml"]
	}
	t.Fatalf("config volume %+v", v)
	return ""
}

var (
	binOnce sync.Once
	bin     string
	binErr  error
)

// startCheck runs `tollgate start --check` on file for role.
func startCheck(t *testing.T, file, role string) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tollgate-helm-test-")
		if err != nil {
			binErr = err
			return
		}
		bin = filepath.Join(dir, "tollgate")
		if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/tollgate").CombinedOutput(); err != nil {
			binErr = err
			t.Logf("%s", out)
		}
	})
	if binErr != nil {
		t.Fatalf("build tollgate: %v", binErr)
	}
	path := filepath.Join(t.TempDir(), "tollgate.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "start", "--check", "--config="+path, "--roles="+role)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tollgate start --check --roles=%s refused the rendered configuration: %v\n%s\n%s", role, err, stderr.String(), file)
	}
	return stdout.String()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bin != "" {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// The broker alone, with Secrets the operator made: the chart makes no
// Secret of its own and mounts the ones named.
func TestChartBrokerOnlyWithExistingSecrets(t *testing.T) {
	out, err := render(t, map[string]any{
		"nats": map[string]any{
			"urls": []any{"tls://nats:4222"},
			"credentials": map[string]any{"secretNames": map[string]any{
				"broker": "ops-broker-seed", "auditor": "ops-auditor-seed",
			}},
		},
		"broker": map[string]any{"publicAddr": "tollgate.example.com:443"},
	})
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, out)
	for _, o := range objs {
		if o.kind == "Secret" || strings.Contains(o.name, "agent") || strings.Contains(o.name, "exporter") {
			t.Errorf("rendered %s %s", o.kind, o.name)
		}
	}
	d := find[appsv1.Deployment](t, objs, "Deployment", "tg-tollgate-broker")
	var names []string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "nats-auth" {
			for _, s := range v.Projected.Sources {
				names = append(names, s.Secret.Name)
			}
		}
		if v.Name == "nats-ca" {
			t.Error("a nats-ca volume without nats.caSecret")
		}
	}
	if !slices.Equal(names, []string{"ops-broker-seed", "ops-auditor-seed"}) {
		t.Errorf("seed Secrets mounted: %q", names)
	}
	cm := find[corev1.ConfigMap](t, objs, "ConfigMap", "tg-tollgate-broker")
	cfg, err := config.Parse([]byte(cm.Data["tollgate.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Proxy.PublicAddr != "tollgate.example.com:443" || cfg.NATS.TLS.CAFile != "" || cfg.NATS.Replicas != 3 || cfg.ClusterName != "tollgate" {
		t.Errorf("configuration %+v", cfg)
	}
	if c := d.Spec.Template.Spec.Containers[0]; c.Image != "tollgate:0.1.0" {
		t.Errorf("image %q: want the chart's appVersion by default", c.Image)
	}
	startCheck(t, cm.Data["tollgate.yaml"], "broker")
}

// Values a release cannot run with are refused when the chart renders,
// each naming the value to set.
func TestChartRefusesIncompleteValues(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(v map[string]any)
		want string
	}{
		"no NATS URLs": {func(v map[string]any) { delete(v["nats"].(map[string]any), "urls") }, "nats.urls: required"},
		"no broker seed": {func(v map[string]any) {
			delete(v["nats"].(map[string]any)["credentials"].(map[string]any)["seeds"].(map[string]any), "broker")
		}, "set seeds.broker or secretNames.broker"},
		"agent without token":     {func(v map[string]any) { delete(v["agent"].(map[string]any), "joinToken") }, "agent.joinToken: required"},
		"agent without pin":       {func(v map[string]any) { delete(v["agent"].(map[string]any), "brokerCAPin") }, "agent.brokerCAPin: required"},
		"agent without databases": {func(v map[string]any) { delete(v["agent"].(map[string]any), "databases") }, "agent.databases: list at least one"},
		"exporter without sinks":  {func(v map[string]any) { delete(v["exporter"].(map[string]any), "exporters") }, "exporter.exporters: list at least one"},
		// values.schema.json: a misspelt or impossible value is refused,
		// not ignored.
		"misspelt key":  {func(v map[string]any) { v["agent"].(map[string]any)["joinTokn"] = "x" }, "joinTokn"},
		"audit mode":    {func(v map[string]any) { v["audit"] = map[string]any{"mode": "lax"} }, "/audit/mode"},
		"stream copies": {func(v map[string]any) { v["nats"].(map[string]any)["replicas"] = 2 }, "/nats/replicas"},
	} {
		t.Run(name, func(t *testing.T) {
			v := values()
			tc.edit(v)
			_, err := render(t, v)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
	// The chart's defaults alone name no NATS cluster.
	if _, err := render(t, nil); err == nil || !strings.Contains(err.Error(), "nats.urls: required") {
		t.Fatalf("defaults: %v", err)
	}
}

// `helm lint` with a complete release's values finds nothing to warn of.
func TestChartLints(t *testing.T) {
	l := lint.RunAll("tollgate", values(), namespace)
	for _, m := range l.Messages {
		t.Log(m)
	}
	if l.HighestSeverity >= support.WarningSev {
		t.Fatalf("helm lint: highest severity %d", l.HighestSeverity)
	}
}

// An agent alone, in another cluster or namespace than its broker: only
// its own seed and the auditor's are needed, and it tunnels to the proxy
// named.
func TestChartAgentAlone(t *testing.T) {
	v := values()
	v["broker"] = map[string]any{"enabled": false}
	v["exporter"] = map[string]any{"enabled": false}
	v["agent"].(map[string]any)["proxyAddrs"] = []any{"tollgate.example.com:443"}
	v["agent"].(map[string]any)["persistence"] = map[string]any{"enabled": false}
	creds := v["nats"].(map[string]any)["credentials"].(map[string]any)
	creds["seeds"] = map[string]any{"agent": agentSeed, "auditor": auditorSeed}
	out, err := render(t, v)
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, out)
	var got []string
	for _, o := range objs {
		got = append(got, o.kind+"/"+o.name)
	}
	sort.Strings(got)
	want := []string{"Deployment/tg-tollgate-agent", "Secret/tg-tollgate-agent", "Secret/tg-tollgate-nats-agent", "Secret/tg-tollgate-nats-auditor"}
	if !slices.Equal(got, want) {
		t.Fatalf("objects %q, want %q", got, want)
	}
	d := find[appsv1.Deployment](t, objs, "Deployment", "tg-tollgate-agent")
	for _, vol := range d.Spec.Template.Spec.Volumes {
		if vol.Name == "data" && vol.EmptyDir == nil {
			t.Errorf("data volume %+v, want an emptyDir without persistence", vol)
		}
	}
	file := find[corev1.Secret](t, objs, "Secret", "tg-tollgate-agent").StringData["tollgate.yaml"]
	cfg, err := config.Parse([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.DBService.ProxyAddrs, []string{"tollgate.example.com:443"}) {
		t.Errorf("proxy_addrs %q", cfg.DBService.ProxyAddrs)
	}
	startCheck(t, file, "agent")
}
