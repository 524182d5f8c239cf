package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	agentmysql "github.com/tollgate-db/tollgate/agent/mysql"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/test/harness"
)

// mysqlTarget is one way for sysbench to reach the database: an address
// and a directory holding the client-cert.pem, client-key.pem and
// cacert.pem sysbench 1.0 reads for --mysql-ssl=on.
type mysqlTarget struct {
	name string
	addr string
	dir  string
}

// mysqlBench is a MariaDB with TLS and a sysbench user, and the four ways
// to reach it: directly, through the byte-copying relay, through the
// agent in strict and in async mode (each agent database on a direct
// MySQL port, with the audit publisher on an embedded JetStream reached
// in-process, as tollgate start runs it).
type mysqlBench struct {
	db      *harness.MariaDBServer
	targets []mysqlTarget
}

func pemFile(tb testing.TB, dir, name, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func copyFile(tb testing.TB, src, dst string) {
	tb.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// agentStack is Tollgate's side of a benchmark: the authorities, the audit
// store on an embedded JetStream reached in-process as the all-in-one
// process reaches it, and the bench user's certificate. tool is the
// benchmark's client, from the Debian package pkg.
func agentStack(tb testing.TB, tool, pkg string) *agenttest.Stack {
	tb.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		tb.Fatalf("%s not found: install the Debian package %s", tool, pkg)
	}
	return agenttest.New(tb, agenttest.Options{Cluster: "bench", InProcess: true, AckTimeout: events.DefaultAckTimeout,
		User: identity.Identity{User: "bench", Roles: []string{"bench"}}})
}

func setupMySQLBench(tb testing.TB, tableSize int) *mysqlBench {
	tb.Helper()
	st := agentStack(tb, "sysbench", "sysbench")
	dir, cas, clientCAPEM := st.Dir, st.CAs, st.DBClientCA(tb)
	db := harness.MariaDBWith(tb, harness.MariaDBOptions{TLS: harness.TLSOptions{ClientCA: clientCAPEM}, Users: []string{"sbtest"},
		Args: []string{"--general-log=0", "--max-connections=100"}})
	m := &mysqlBench{db: db}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)

	// The database user's certificate, for direct connections and the
	// relay's upstream leg.
	dbKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dbCert, _, err := cas.IssueDBClient(dbKey.Public(), "sbtest", time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	dbKeyDER, _ := x509.MarshalPKCS8PrivateKey(dbKey)
	dbTLSCert := tls.Certificate{Certificate: [][]byte{dbCert.Raw}, PrivateKey: dbKey}
	mkdir := func(name string) string {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o700); err != nil {
			tb.Fatal(err)
		}
		return d
	}
	direct := mkdir("direct")
	pemFile(tb, direct, "client-cert.pem", "CERTIFICATE", dbCert.Raw)
	pemFile(tb, direct, "client-key.pem", "PRIVATE KEY", dbKeyDER)
	copyFile(tb, db.ServerCAFile, filepath.Join(direct, "cacert.pem"))
	m.targets = append(m.targets, mysqlTarget{name: "direct", addr: db.Addr(), dir: direct})

	// The relay.
	relayCA := harness.NewCA(tb, "mysql relay CA")
	relayPair := relayCA.IssueServer(tb, "127.0.0.1")
	relay := &MySQLRelay{
		ClientTLS:   &tls.Config{Certificates: []tls.Certificate{relayPair.TLSCertificate()}},
		Upstream:    db.Addr(),
		UpstreamTLS: db.TLSConfig(&dbTLSCert),
	}
	relayLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = relay.Serve(ctx, relayLn) }()
	relayDir := mkdir("relay")
	pemFile(tb, relayDir, "client-cert.pem", "CERTIFICATE", dbCert.Raw)
	pemFile(tb, relayDir, "client-key.pem", "PRIVATE KEY", dbKeyDER)
	relayCA.WriteCert(tb, filepath.Join(relayDir, "cacert.pem"))
	m.targets = append(m.targets, mysqlTarget{name: "relay", addr: relayLn.Addr().String(), dir: relayDir})

	// One agent per audit mode, each on a direct MySQL port.
	const roles = "kind: role\nmetadata: {name: bench}\nspec:\n  allow:\n    db_labels: {'*': '*'}\n    db_users: [sbtest]\n    db_names: ['*']\n"
	for _, mode := range []string{"strict", "async", "discard"} {
		var rec agent.Recorder = st.Pub
		auditMode := mode
		if mode == "discard" {
			// A diagnostic: the agent with a recorder that stores
			// nothing separates the engine's own cost from storing.
			rec, auditMode = discardRecorder{}, "strict"
		}
		eng := agentmysql.New(agentmysql.Options{Logger: agenttest.Quiet()})
		var addr string
		st.Serve(tb, agenttest.Agent{Roles: roles, ServerConfig: agent.ServerConfig{
			Databases: []config.Database{{Name: "my-" + mode, Protocol: "mysql", URI: db.Addr(), AuditMode: auditMode,
				TLS: config.DatabaseTLS{Mode: "verify-full", CACertFile: db.ServerCAFile}}},
			Recorder: rec,
			Engines:  map[string]agent.Engine{"mysql": eng},
		}, Listeners: func(srv *agent.Server) []net.Listener {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				tb.Fatal(err)
			}
			addr = ln.Addr().String()
			dbInfo, _ := srv.Database("my-" + mode)
			return []net.Listener{eng.Listener(ln, agentmysql.ListenerOptions{Cluster: "bench", Recorder: rec, Database: dbInfo})}
		}})
		d := mkdir("tollgate-" + mode)
		copyFile(tb, st.UserCertFile, filepath.Join(d, "client-cert.pem"))
		copyFile(tb, st.UserKeyFile, filepath.Join(d, "client-key.pem"))
		copyFile(tb, st.HostCAFile, filepath.Join(d, "cacert.pem"))
		name := "tollgate " + mode
		if mode == "discard" {
			name = "agent, events discarded"
		}
		m.targets = append(m.targets, mysqlTarget{name: name, addr: addr, dir: d})
	}

	if out, err := m.sysbench(m.targets[0], "oltp_read_only", 4, 0, tableSize, "prepare"); err != nil {
		tb.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	return m
}

func (m *mysqlBench) sysbench(t mysqlTarget, workload string, threads, seconds, tableSize int, command string) ([]byte, error) {
	host, port, _ := net.SplitHostPort(t.addr)
	args := []string{workload, "--db-driver=mysql", "--mysql-host=" + host, "--mysql-port=" + port,
		"--mysql-user=sbtest", "--mysql-db=test", "--mysql-ssl=on", "--tables=1",
		"--table-size=" + strconv.Itoa(tableSize), "--threads=" + strconv.Itoa(threads)}
	if seconds > 0 {
		args = append(args, "--time="+strconv.Itoa(seconds))
	}
	cmd := exec.Command("sysbench", append(args, command)...)
	cmd.Dir = t.dir
	return cmd.CombinedOutput()
}

var qpsRE = regexp.MustCompile(`queries:\s+\d+\s+\(([\d.]+) per sec`)

// mysqlResult is one sysbench run: queries per second, and the CPU time
// this process (the relay or the agent, with its JetStream) spent per
// query, which depends far less than throughput on what else the machine
// runs.
type mysqlResult struct {
	qps     float64
	cpuPerQ time.Duration
	queries float64
}

var queriesRE = regexp.MustCompile(`queries:\s+(\d+)\s+\(`)

// run runs sysbench once through t.
func (m *mysqlBench) run(tb testing.TB, t mysqlTarget, workload string, threads, seconds, tableSize int) mysqlResult {
	tb.Helper()
	cpu0 := SelfCPUTime()
	out, err := m.sysbench(t, workload, threads, seconds, tableSize, "run")
	cpu := SelfCPUTime() - cpu0
	if err != nil {
		tb.Fatalf("sysbench %s through %s: %v\n%s", workload, t.name, err, out)
	}
	if n := errorsIn(out); n > 0 {
		tb.Fatalf("sysbench %s through %s met %d errors\n%s", workload, t.name, n, out)
	}
	mm := qpsRE.FindSubmatch(out)
	if mm == nil {
		tb.Fatalf("sysbench %s through %s: no queries per second in\n%s", workload, t.name, out)
	}
	var r mysqlResult
	r.qps, _ = strconv.ParseFloat(string(mm[1]), 64)
	if q := queriesRE.FindSubmatch(out); q != nil {
		r.queries, _ = strconv.ParseFloat(string(q[1]), 64)
	}
	if r.queries > 0 {
		r.cpuPerQ = time.Duration(float64(cpu) / r.queries)
	}
	return r
}

// discardRecorder stores nothing.
type discardRecorder struct{}

func (discardRecorder) Publish(context.Context, events.Event) error        { return nil }
func (discardRecorder) PublishBatch(context.Context, []events.Event) error { return nil }

func errorsIn(out []byte) int {
	mm := regexp.MustCompile(`ignored errors:\s+(\d+)`).FindSubmatch(out)
	if mm == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(mm[1]))
	return n
}

// table runs every workload through every target once and formats the
// queries per second with their ratio to direct, and this process's CPU
// time per query.
func (m *mysqlBench) table(tb testing.TB, workloads []string, threads, seconds, tableSize int) (string, map[string]map[string]mysqlResult) {
	res := map[string]map[string]mysqlResult{}
	for _, w := range workloads {
		res[w] = map[string]mysqlResult{}
		for _, t := range m.targets {
			res[w][t.name] = m.run(tb, t, w, threads, seconds, tableSize)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## MySQL: sysbench, %d threads, %ds per run, TLS on both legs, MariaDB 10.11\n\n", threads, seconds)
	fmt.Fprintf(&b, "Load average before: %s.\n\nQueries per second (ratio to direct):\n\n", LoadAverage())
	header := func() {
		fmt.Fprintf(&b, "| workload | %s |", strings.Join(names(m.targets), " | "))
		b.WriteString(" strict/relay |\n|---|")
		for range m.targets {
			b.WriteString("---|")
		}
		b.WriteString("---|\n")
	}
	header()
	for _, w := range workloads {
		fmt.Fprintf(&b, "| %s |", w)
		for _, t := range m.targets {
			fmt.Fprintf(&b, " %.0f (%.2f) |", res[w][t.name].qps, res[w][t.name].qps/res[w]["direct"].qps)
		}
		fmt.Fprintf(&b, " %.2f |\n", ratio(res[w]["tollgate strict"].qps, res[w]["relay"].qps))
	}
	b.WriteString("\nCPU time of the proxy process per query in µs (relay, or agent with its embedded JetStream; direct: the idle test process):\n\n")
	header()
	for _, w := range workloads {
		fmt.Fprintf(&b, "| %s |", w)
		for _, t := range m.targets {
			fmt.Fprintf(&b, " %.1f |", float64(res[w][t.name].cpuPerQ.Nanoseconds())/1000)
		}
		fmt.Fprintf(&b, " %.2f |\n", ratio(float64(res[w]["tollgate strict"].cpuPerQ), float64(res[w]["relay"].cpuPerQ)))
	}
	return b.String(), res
}

func names(ts []mysqlTarget) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.name)
	}
	return out
}

// TestMySQLBenchSmoke runs the benchmark's set-up and a one-second
// point-select run through every target, so make test proves the
// benchmark works without timing anything.
func TestMySQLBenchSmoke(t *testing.T) {
	m := setupMySQLBench(t, 100)
	for _, tg := range m.targets {
		if r := m.run(t, tg, "oltp_point_select", 2, 1, 100); r.qps <= 0 {
			t.Fatalf("%s: no queries", tg.name)
		}
	}
}

// BenchmarkMySQLSysbench is the end-to-end comparison make bench runs once:
// sysbench oltp_read_only and oltp_point_select with 8 threads, directly,
// through the relay and through the agent in strict and async mode.
func BenchmarkMySQLSysbench(b *testing.B) {
	if b.N > 1 {
		b.Skip("one run is the measurement")
	}
	seconds := 10
	if s := os.Getenv("TOLLGATE_BENCH_SECONDS"); s != "" {
		seconds, _ = strconv.Atoi(s)
	}
	m := setupMySQLBench(b, 10000)
	workloads := []string{"oltp_read_only", "oltp_point_select"}
	// TOLLGATE_BENCH_ONLY narrows a run to some targets (comma separated,
	// direct and relay always included) and TOLLGATE_BENCH_WORKLOADS to
	// some workloads, for profiling.
	if only := os.Getenv("TOLLGATE_BENCH_ONLY"); only != "" {
		var keep []mysqlTarget
		for _, t := range m.targets {
			if t.name == "direct" || t.name == "relay" || strings.Contains(","+only+",", ","+t.name+",") {
				keep = append(keep, t)
			}
		}
		m.targets = keep
	}
	if w := os.Getenv("TOLLGATE_BENCH_WORKLOADS"); w != "" {
		workloads = strings.Split(w, ",")
	}
	table, res := m.table(b, workloads, 8, seconds, 10000)
	fmt.Println(table)
	for w, r := range res {
		b.ReportMetric(ratio(r["tollgate strict"].qps, r["relay"].qps), w+"_strict/relay")
	}
}
