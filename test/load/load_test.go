package load

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent/service"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/test/faults"
)

// clientEnv carries the client plan to the child process.
const clientEnv = "TOLLGATE_LOAD_CLIENT"

func TestMain(m *testing.M) {
	if plan := os.Getenv(clientEnv); plan != "" {
		var p ClientPlan
		if err := json.Unmarshal([]byte(plan), &p); err != nil {
			fmt.Fprintln(os.Stderr, "load client:", err)
			os.Exit(2)
		}
		if err := RunClient(p, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "load client:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// sizes of the run: the full one (TOLLGATE_FAULTS=1, make faults) or the
// smoke one of make test.
type sizes struct {
	idle, busy, storm int
	busyFor           time.Duration
}

func runSizes() sizes {
	if os.Getenv("TOLLGATE_FAULTS") == "1" {
		return sizes{idle: 1000, busy: 200, storm: 250, busyFor: 30 * time.Second}
	}
	return sizes{idle: 100, busy: 20, storm: 50, busyFor: 3 * time.Second}
}

// usage is what the test process (agent and embedded NATS) holds.
type usage struct {
	goroutines, fds int
	heap            uint64 // heap in use plus goroutine stacks, after a GC
	rss             int64
	cpu             time.Duration
}

func measure() usage {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fds, _ := os.ReadDir("/proc/self/fd")
	return usage{goroutines: runtime.NumGoroutine(), fds: len(fds), heap: ms.HeapInuse + ms.StackInuse, rss: rssBytes(),
		cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			var kb int64
			_, _ = fmt.Sscanf(strings.TrimPrefix(l, "VmRSS:"), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

func TestSessionsAndStorm(t *testing.T) {
	for _, p := range []string{"pgbench"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s is not installed (Debian: postgresql-client): %v", p, err)
		}
	}
	sz := runSizes()
	sessions := sz.idle + sz.busy
	// The limits leave the load's user 10 more connections and the agent
	// 50 more than the sessions: the storm must be refused past them.
	perUser, perAgent := sessions+10, sessions+50
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute+sz.busyFor)
	defer cancel()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cas, err := ca.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	pg := faults.StartPostgres(t, cas, perAgent+20, 1)
	hostCA, cert, key := faults.UserFiles(t, cas, dir, faults.TollgateUser)
	_, stormCert, stormKey := faults.UserFiles(t, cas, dir, "stormer")

	ns, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(dir, "nats"), Listen: natsserver.InProcessOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(js, faults.Cluster, events.WithMode(events.ModeStrict))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(context.Background())
	cfg, err := config.Parse([]byte(fmt.Sprintf(`cluster_name: %s
data_dir: %q
db_service:
  max_connections: %d
  max_connections_per_user: %d
  databases:
    - name: %s
      protocol: postgres
      uri: %q
      static_labels: {env: load}
      tls: {mode: verify-full, ca_cert_file: %q}
`, faults.Cluster, data, perAgent, perUser, faults.PGName, pg.Addr(), pg.ServerCAFile)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopAgent := context.WithCancel(ctx)
	agentSvc, err := service.Start(sctx, service.Options{Config: cfg, JS: js, Recorder: pub, Listener: ln,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		stopAgent()
		if err := agentSvc.Wait(); err != nil {
			t.Errorf("agent: %v", err)
		}
	}()
	addr := ln.Addr().String()

	// Warm up once in a child, so that what runs once per process (TLS
	// tables, pools) is in the baseline, then measure the baseline.
	warm := startClient(t, ClientPlan{Agent: addr, HostCA: hostCA, Cert: cert, Key: key, StormCert: stormCert, StormKey: stormKey,
		Idle: 1, Busy: 1, BusyFor: 100 * time.Millisecond, Storm: 1, StormWindow: 10 * time.Millisecond})
	for _, phase := range []string{"idle", "busy", "idle-answer", "storm"} {
		warm.next(t, phase)
	}
	warm.finish(t)
	base := settle(measure(), 30*time.Second)

	c := startClient(t, ClientPlan{Agent: addr, HostCA: hostCA, Cert: cert, Key: key, StormCert: stormCert, StormKey: stormKey,
		Idle: sz.idle, Busy: sz.busy, BusyFor: sz.busyFor, Storm: sz.storm, StormWindow: time.Second})
	idleStart := time.Now()
	r := c.next(t, "idle")
	idleOpen := time.Since(idleStart)
	if r.OK != sz.idle {
		t.Fatalf("%d of %d idle sessions opened; errors %v", r.OK, sz.idle, r.Errors)
	}
	withIdle := measure()
	perSessionHeap := float64(int64(withIdle.heap)-int64(base.heap)) / float64(sz.idle)
	perSessionRSS := float64(withIdle.rss-base.rss) / float64(sz.idle)
	goroutinesPerSession := float64(withIdle.goroutines-base.goroutines) / float64(sz.idle)

	busyStart := time.Now()
	r = c.next(t, "busy")
	busyWall := time.Since(busyStart)
	withBusy := measure()
	if r.OK != sz.busy || len(r.Errors) > 0 {
		t.Fatalf("busy: %d of %d sessions, errors %v", r.OK, sz.busy, r.Errors)
	}
	per := r.PerSession
	total := 0
	for _, n := range per {
		total += n
	}
	// No session starved: each busy one ran statements the whole time.
	if per[0] == 0 {
		t.Errorf("a busy session ran no statement in %s (per session: min %d, median %d, max %d)", sz.busyFor, per[0], per[len(per)/2], per[len(per)-1])
	}
	cpu := withBusy.cpu - withIdle.cpu
	busySecs := r.Seconds
	stmtRate := float64(total) / busySecs

	r = c.next(t, "idle-answer")
	if r.OK != sz.idle {
		t.Errorf("%d of %d idle sessions answered after the busy phase; errors %v", r.OK, sz.idle, r.Errors)
	}

	r = c.next(t, "storm")
	storm := r
	// Room for exactly 50 more connections (the agent's limit); every
	// other one refused with 53300 and the limit's name.
	if r.OK != perAgent-sessions {
		t.Errorf("storm: %d connections accepted, want %d (the agent's limit)", r.OK, perAgent-sessions)
	}
	if len(r.Errors) > 0 {
		t.Errorf("storm: errors other than refusals: %v", r.Errors)
	}
	refused := 0
	for msg, n := range r.Refused {
		refused += n
		if !strings.HasPrefix(msg, "53300 ") || !strings.Contains(msg, "max_connections") {
			t.Errorf("storm: refusal %q (%d×) is not 53300 naming the limit", msg, n)
		}
	}
	if refused+r.OK != 2*sz.storm {
		t.Errorf("storm: %d accepted + %d refused of %d", r.OK, refused, 2*sz.storm)
	}
	c.finish(t)

	after := settle(base, 60*time.Second)
	if after.goroutines > base.goroutines || after.fds > base.fds {
		t.Errorf("leak after the load: goroutines %d (before %d), file descriptors %d (before %d)", after.goroutines, base.goroutines, after.fds, base.fds)
	}
	// The agent still serves.
	ping := startClient(t, ClientPlan{Agent: addr, HostCA: hostCA, Cert: cert, Key: key, StormCert: stormCert, StormKey: stormKey,
		Idle: 1, Busy: 1, BusyFor: 100 * time.Millisecond, Storm: 1, StormWindow: 10 * time.Millisecond})
	if r := ping.next(t, "idle"); r.OK != 1 {
		t.Errorf("after the storm a new session failed: %v", r.Errors)
	}
	for _, phase := range []string{"busy", "idle-answer", "storm"} {
		ping.next(t, phase)
	}
	ping.finish(t)

	// Every statement of the run in the audit stream.
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	l := &faults.Ledger{JS: js, PG: pg}
	totals, _, err := l.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if totals.Missing != 0 || totals.Statements == 0 {
		t.Errorf("%d statements in the database log, %d without an audit event", totals.Statements, totals.Missing)
	}

	mib := func(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }
	rows := [][]string{
		{"idle sessions open at once", fmt.Sprintf("%d (+%d busy, %d in all)", sz.idle, sz.busy, sessions)},
		{"time to open the idle sessions (32 at a time)", idleOpen.Round(10 * time.Millisecond).String()},
		{"memory per idle session: Go heap + stacks", mib(perSessionHeap)},
		{"memory per idle session: RSS of the agent process", mib(perSessionRSS)},
		{"goroutines per idle session", fmt.Sprintf("%.1f", goroutinesPerSession)},
		{"busy sessions: statements/s through the agent", fmt.Sprintf("%.0f (%d statements in %.1f s)", stmtRate, total, busySecs)},
		{"busy sessions: statements per session min / median / max", fmt.Sprintf("%d / %d / %d", per[0], per[len(per)/2], per[len(per)-1])},
		{"CPU of the agent process (agent + embedded NATS) in the busy phase", fmt.Sprintf("%.2f cores (%.1f µs per statement)", cpu.Seconds()/busyWall.Seconds(), float64(cpu.Microseconds())/float64(max(total, 1)))},
		{"idle sessions answering after the busy phase", fmt.Sprintf("%d of %d", sz.idle, sz.idle)},
		{"storm", fmt.Sprintf("%d new TLS connections (two users) started in %.2f s", 2*sz.storm, storm.Seconds)},
		{"storm: accepted", fmt.Sprintf("%d (limits: %d per agent, %d per user)", storm.OK, perAgent, perUser)},
		{"storm: refused", strings.Join(TopRefusals(storm.Refused), "; ")},
		{"goroutines before / after", fmt.Sprintf("%d / %d", base.goroutines, after.goroutines)},
		{"file descriptors before / after", fmt.Sprintf("%d / %d", base.fds, after.fds)},
		{"statements in the database log / without an audit event", fmt.Sprintf("%d / %d", totals.Statements, totals.Missing)},
	}
	table := faults.Table([]string{"measure", "value"}, rows)
	t.Logf("\n%s", table)
	if path := os.Getenv("TOLLGATE_LOAD_REPORT"); path != "" && !t.Failed() {
		section := fmt.Sprintf("## One agent under many sessions\n\n`TOLLGATE_FAULTS=1 go test ./test/load` (part of `make faults`): the agent (agent/service as `tollgate start` runs it, strict audit, "+
			"embedded NATS in the same process) serves %d idle and %d busy PostgreSQL sessions (pgx, simple protocol, from a child process); "+
			"busy sessions run statements back to back for %s. Then a storm of %d new TLS connections, half of the load's user and half of another, "+
			"with `db_service.max_connections: %d` and `max_connections_per_user: %d`. Goroutines and descriptors are counted in the agent's process "+
			"before the first session and after the last one closed.\n\n%s", sz.idle, sz.busy, sz.busyFor, 2*sz.storm, perAgent, perUser, table)
		if err := os.WriteFile(path, []byte(section), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TopRefusals lists refusals by count.
func TopRefusals(m map[string]int) []string { return faults.TopErrors(m, 3) }

// settle measures until goroutines and descriptors are back to base (or
// timeout passes): closed sessions end their goroutines a moment after
// the client left.
func settle(base usage, timeout time.Duration) usage {
	deadline := time.Now().Add(timeout)
	for {
		u := measure()
		if (u.goroutines <= base.goroutines && u.fds <= base.fds) || time.Now().After(deadline) {
			return u
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// client is the child process running a ClientPlan.
type client struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
	log *strings.Builder
}

func startClient(t *testing.T, p ClientPlan) *client {
	t.Helper()
	plan, _ := json.Marshal(p)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), clientEnv+"="+string(plan))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &client{cmd: cmd, in: in, out: bufio.NewScanner(out), log: &strings.Builder{}}
	c.out.Buffer(make([]byte, 1<<20), 16<<20)
	cmd.Stderr = c.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return c
}

// next reads the report of phase and lets the client go on afterwards.
func (c *client) next(t *testing.T, phase string) Report {
	t.Helper()
	if !c.out.Scan() {
		t.Fatalf("client ended before %s: %v\n%s", phase, c.out.Err(), c.log)
	}
	var r Report
	if err := json.Unmarshal(c.out.Bytes(), &r); err != nil {
		t.Fatalf("client: %v: %s", err, c.out.Bytes())
	}
	if r.Phase != phase {
		t.Fatalf("client reported %q, want %q", r.Phase, phase)
	}
	if _, err := io.WriteString(c.in, "go\n"); err != nil {
		t.Fatal(err)
	}
	return r
}

// finish waits for the client to close everything and exit.
func (c *client) finish(t *testing.T) {
	t.Helper()
	if !c.out.Scan() {
		t.Fatalf("client ended before closing: %s", c.log)
	}
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("client: %v\n%s", err, c.log)
	}
}
