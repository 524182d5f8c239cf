package bench

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The full benchmark runs only when asked (make bench); without
// -bench-report the test is a short smoke run of the same machinery.
var (
	flagReport   = flag.Bool("bench-report", false, "run the full end-to-end PostgreSQL benchmark and write the report")
	flagTime     = flag.Duration("bench-time", 10*time.Second, "pgbench -T of each measured run (full benchmark)")
	flagClients  = flag.String("bench-clients", "1,8,32", "pgbench client counts, comma separated (full benchmark)")
	flagModes    = flag.String("bench-modes", "simple,prepared", "pgbench -M protocols, comma separated (full benchmark)")
	flagScale    = flag.Int("bench-scale", 10, "pgbench -i scale factor (full benchmark)")
	flagCopyMB   = flag.Int("bench-copy-mb", 320, "size of the COPY data set in MB (full benchmark)")
	flagRounds   = flag.Int("bench-rounds", 1, "measure every configuration this many times and keep the median (full benchmark)")
	flagOut      = flag.String("bench-out", "report.md", "file the full benchmark's report is written to")
	flagUnsigned = flag.Bool("bench-unsigned", false, "also measure strict audit with frames that are never signed (the signatures' share of strict's cost)")
	flagNoStore  = flag.Bool("bench-nostore", true, "also measure the agent with a recorder that discards events (a diagnostic of where the agent's time goes)")
	flagIdle     = flag.Int("bench-idle-sessions", 1000, "idle sessions opened to the strict agent directly and through the proxy and one tunnel, whose memory per session is reported (full benchmark; 0: not measured)")
	flagProfiles = flag.String("bench-cpuprofile", "", "directory for CPU profiles of this process (relay and agents) during each in-process target's runs")
	flagTargets  = flag.String("bench-targets", "", "measure only these targets, comma separated (full benchmark; empty: all)")
)

type benchConfig struct {
	duration   time.Duration
	clients    []int
	modes      []string
	scale      int
	copyMB     int
	rounds     int
	out        string
	profileDir string
	targets    []string
	// idle is the number of idle sessions measured; 0 skips it.
	idle int
}

func configFromFlags(t *testing.T) benchConfig {
	if !*flagReport {
		// Smoke: every target, both protocols, one client, one second.
		return benchConfig{duration: time.Second, clients: []int{1}, modes: []string{"simple", "prepared"},
			scale: 1, copyMB: 8, rounds: 1, profileDir: *flagProfiles, targets: append(Targets[:len(Targets):len(Targets)], TargetNoStore, TargetUnsigned),
			idle: 100}
	}
	c := benchConfig{duration: *flagTime, modes: splitList(*flagModes), scale: *flagScale, copyMB: *flagCopyMB,
		rounds: max(*flagRounds, 1), out: *flagOut, profileDir: *flagProfiles, targets: Targets, idle: max(*flagIdle, 0)}
	if *flagNoStore {
		c.targets = append(c.targets[:len(c.targets):len(c.targets)], TargetNoStore)
	}
	if *flagUnsigned {
		c.targets = append(c.targets[:len(c.targets):len(c.targets)], TargetUnsigned)
	}
	if only := splitList(*flagTargets); len(only) > 0 {
		for _, name := range only {
			if !slices.Contains(c.targets, name) {
				t.Fatalf("-bench-targets: %q is not one of %q", name, c.targets)
			}
		}
		c.targets = only
	}
	for _, s := range splitList(*flagClients) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("-bench-clients: %q is not a positive number", s)
		}
		c.clients = append(c.clients, n)
	}
	for _, m := range c.modes {
		if m != "simple" && m != "extended" && m != "prepared" {
			t.Fatalf("-bench-modes: %q is not simple, extended or prepared", m)
		}
	}
	if c.scale < 1 || c.copyMB < 1 || c.duration < time.Second {
		t.Fatalf("-bench-scale and -bench-copy-mb must be positive and -bench-time at least 1s")
	}
	return c
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// benchSettings keep the database's own costs what a production server
// would have for this workload: no statement log (the harness logs every
// statement for audit comparisons), a buffer cache that holds the data set.
var benchSettings = map[string]string{
	"log_statement":   "none",
	"log_connections": "off",
	"shared_buffers":  "256MB",
	"max_connections": "100",
}

// TestPgbenchReport measures pgbench -S and COPY directly, through the
// byte-copying relay, pgbouncer, the agent in strict and async audit mode,
// and the strict agent through the proxy and its reverse tunnel, all in
// one run, and (with -bench-report) writes the report.
func TestPgbenchReport(t *testing.T) {
	for _, p := range []string{"pgbench", "psql"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not found: install postgresql-client-15", p)
		}
	}
	cfg := configFromFlags(t)
	rep := &Report{Machine: DescribeMachine(), Targets: cfg.targets}
	rep.Settings = fmt.Sprintf("pgbench -S -n, -T %s per run, -j min(2, clients), scale %d, %d round(s) with the targets interleaved (median kept); TLS on every leg; "+
		"COPY of a %d MB table (text format) with psql; PostgreSQL fsync off, log_statement none, shared_buffers 256MB",
		cfg.duration, cfg.scale, cfg.rounds, cfg.copyMB)

	s := newStack(t, benchSettings)
	rep.Machine.PostgresVersion = s.adminQuery(t, "select split_part(version(), ' on ', 1)")

	t.Logf("loading pgbench scale %d and %d MB of COPY data", cfg.scale, cfg.copyMB)
	s.admin(t, "pgbench", "-i", "-q", "-s", strconv.Itoa(cfg.scale))
	s.adminSQL(t, "grant select on pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history to "+benchUser)
	s.loadCopyData(t, cfg.copyMB)

	// Every target must carry a session before anything is measured.
	for _, name := range cfg.targets {
		got, err := s.psql(s.conns[name], "select current_user || ' ' || (select ssl from pg_stat_ssl where pid = pg_backend_pid())::text")
		if err != nil || strings.TrimSpace(got) != benchUser+" true" {
			t.Fatalf("%s: psql: %v %q", name, err, got)
		}
	}
	// Warm the database's caches so the first target measured is not
	// penalised.
	warm := Pgbench{Conn: s.conns[TargetDirect], Mode: "prepared", Clients: 2, Duration: 2 * time.Second}
	if _, out, err := warm.Run(context.Background()); err != nil {
		t.Fatalf("warm-up: %v\n%s", err, out)
	}

	// Idle sessions are measured before the busy runs, whose buffers the
	// process would still be giving back.
	if cfg.idle > 0 {
		idle := s.idleSessions(t, cfg.idle)
		rep.Idle = &idle
	}

	eventsBefore := s.auditEvents(t)
	var strictTx int64
	cellIndex := 0
	for _, mode := range cfg.modes {
		for _, clients := range cfg.clients {
			cell := Cell{Mode: mode, Clients: clients, Results: map[string]Measure{}}
			runs := map[string][]Measure{}
			for round := 0; round < cfg.rounds; round++ {
				// The starting target rotates so that none always runs
				// first (or last) in a cell.
				for k := range cfg.targets {
					name := cfg.targets[(cellIndex+round+k)%len(cfg.targets)]
					res := s.pgbench(t, cfg, name, mode, clients)
					runs[name] = append(runs[name], res)
					if name == TargetStrict {
						strictTx += res.Transactions
					}
				}
			}
			for name, rs := range runs {
				cell.Results[name] = median(rs)
			}
			cellIndex++
			rep.Cells = append(rep.Cells, cell)
			t.Logf("-M %s -c %d: %s", mode, clients, cellSummary(cell))
		}
	}

	copies := map[string][]CopyResult{}
	for round := 0; round < cfg.rounds; round++ {
		for k := range cfg.targets {
			name := cfg.targets[(round+k)%len(cfg.targets)]
			copies[name] = append(copies[name], s.copyBench(t, cfg, name))
		}
	}
	for _, name := range cfg.targets {
		rep.Copy = append(rep.Copy, medianCopy(copies[name]))
	}
	rep.Machine.LoadEnd = LoadAverage()

	// The audit trail really was written: every strict transaction stored
	// its events before it ran.
	for _, p := range s.pubs {
		ctx, cancel := waitCtx(60 * time.Second)
		if err := p.Flush(ctx); err != nil {
			t.Errorf("flushing the audit publisher: %v", err)
		}
		cancel()
	}
	stored := s.auditEvents(t) - eventsBefore
	if stored < uint64(strictTx) {
		t.Errorf("the AUDIT stream gained %d events, fewer than the %d transactions run through the strict agent", stored, strictTx)
	}
	for _, target := range []string{TargetStrict, TargetAsync, TargetUnsigned} {
		if pub := s.pubs[target]; pub != nil {
			st := pub.Stats()
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: %d events in %d frames (%.1f events per frame)", target, st.Acked, st.Frames, float64(st.Acked)/max(float64(st.Frames), 1)))
		}
	}
	rep.Notes = append(rep.Notes,
		fmt.Sprintf("audit events stored during the pgbench and COPY runs: %d (every agent that stores them; every statement is a query or execute event, carrying its bound parameters, plus a result event; COPY data is summarised every 8 MiB or second)", stored),
		"relay, pgbouncer and the agents run in this process or beside it on the same 2 cores as pgbench and PostgreSQL: every proxy competes with both for CPU, which is why even the relay, which only copies bytes, falls well short of direct",
		"Tollgate = the agent (TLS from the client with a user certificate, access decision, full decoding of both directions, audit events) with an embedded JetStream server (file storage) reached in-process",
		"\"agent, events discarded\" is a diagnostic, not a product mode: the same agent with a recorder that drops every event; its distance to the relay is the engine's cost (decoding, building events), its distance to Tollgate strict the cost of storing the events (publisher, JetStream, the garbage they make)")

	if slices.Contains(cfg.targets, TargetStrictViaProxy) {
		rep.Notes = append(rep.Notes, "\"strict via proxy\" is the strict agent reached as a database behind NAT is: the agent has no listening socket and keeps a reverse tunnel (TLS, yamux) to an in-process proxy; pgbench and psql connect to the proxy's port with the database's name as SNI (PGHOST=pg, PGHOSTADDR=127.0.0.1, verify-full), the proxy routes on the ClientHello and splices the bytes onto a tunnel stream, and the client's TLS ends at the agent. Its proxy CPU is this process's: proxy, tunnel and agent together, so its distance to Tollgate strict's is the proxy's and the tunnel's share. The aim is ≥ 0.9× the strict agent reached directly, in TPS and in COPY each way (the \"via proxy / strict direct\" and \"to strict direct\" columns)")
	}
	if slices.Contains(cfg.targets, TargetUnsigned) {
		rep.Notes = append(rep.Notes, "\"strict, unsigned\" is a diagnostic: strict audit whose frames are chained but never signed; its distance to Tollgate strict is what the signatures cost (hashing is in both)")
	}
	md := rep.Markdown()
	fmt.Println(md)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(md), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("report written to %s", cfg.out)
	}
}

func cellSummary(c Cell) string {
	var parts []string
	for _, name := range targetsOf(c) {
		r := c.Results[name]
		parts = append(parts, fmt.Sprintf("%s %.0f tps", name, r.TPS))
	}
	return strings.Join(parts, ", ")
}

func targetsOf(c Cell) []string {
	var names []string
	for _, t := range append(Targets[:len(Targets):len(Targets)], TargetNoStore, TargetUnsigned) {
		if _, ok := c.Results[t]; ok {
			names = append(names, t)
		}
	}
	return names
}

// medianCopy takes the median of each direction separately: the two
// transfers are separate runs.
func medianCopy(rs []CopyResult) CopyResult {
	out := append([]CopyResult(nil), rs...)
	sort.Slice(out, func(i, j int) bool { return out[i].Out < out[j].Out })
	m := out[len(out)/2]
	sort.Slice(out, func(i, j int) bool { return out[i].In < out[j].In })
	in := out[len(out)/2]
	m.InBytes, m.In, m.InCPU, m.InEvents = in.InBytes, in.In, in.InCPU, in.InEvents
	return m
}

// median is the run with the median TPS.
func median(rs []Measure) Measure {
	sorted := append([]Measure(nil), rs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].TPS < sorted[j].TPS })
	return sorted[len(sorted)/2]
}

// pgbench runs one measured pgbench with the proxy's CPU time and, for
// the agents, the audit events stored; in-process targets are profiled
// when asked.
func (s *stack) pgbench(t *testing.T, cfg benchConfig, name, mode string, clients int) Measure {
	t.Helper()
	var res PgbenchResult
	m := s.measure(t, cfg, fmt.Sprintf("%s-%s-c%d", name, mode, clients), name, func() error {
		p := Pgbench{Conn: s.conns[name], Mode: mode, Clients: clients, Duration: cfg.duration, LogDir: t.TempDir()}
		var out string
		var err error
		res, out, err = p.Run(context.Background())
		if err != nil {
			return fmt.Errorf("%w\n%s", err, out)
		}
		if res.Transactions == 0 || res.Failed != 0 || res.TPS <= 0 {
			return fmt.Errorf("-M %s -c %d: %d transactions, %d failed, %.1f tps\n%s", mode, clients, res.Transactions, res.Failed, res.TPS, out)
		}
		return nil
	})
	m.PgbenchResult = res
	// Every statement has its client event(s) and a result event: a
	// stream with fewer than two per transaction lost some.
	if stores(name) && m.Events < 2*uint64(res.Transactions) {
		t.Errorf("%s -M %s -c %d: %d transactions stored only %d audit events", name, mode, clients, res.Transactions, m.Events)
	}
	t.Logf("%-15s -M %-8s -c %-2d %8.0f tps %7.3f ms (p50 %.3f, p99 %.3f)  proxy %6.1f µs/tx", name, mode, clients, res.TPS, res.LatencyMs, res.P50Ms, res.P99Ms, m.CPUPerTx())
	return m
}

// measure runs fn against target and returns the proxy's CPU time and the
// audit events stored. For the agents it waits until the stream stops
// growing, so that events still queued (async mode, result events) are
// counted here and their cost does not spill into the next run.
func (s *stack) measure(t *testing.T, cfg benchConfig, file, target string, fn func() error) Measure {
	t.Helper()
	agentTarget := stores(target)
	var before uint64
	if agentTarget {
		before = s.auditEvents(t)
	}
	stop := s.profile(t, cfg, file, target)
	cpu0 := s.proxyCPU(t, target)
	err := fn()
	var m Measure
	if agentTarget {
		m.Events = s.settleAudit(t) - before
	}
	m.ProxyCPU = s.proxyCPU(t, target) - cpu0
	stop()
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	return m
}

// proxyCPU is the CPU time used so far by the process the target runs in.
func (s *stack) proxyCPU(t *testing.T, target string) time.Duration {
	switch target {
	case TargetDirect:
		return 0
	case TargetPgBouncer:
		d, err := s.bouncer.CPUTime()
		if err != nil {
			t.Fatalf("pgbouncer CPU time: %v", err)
		}
		return d
	}
	return SelfCPUTime()
}

// settleAudit waits until the AUDIT stream has not grown for half a second
// (at most a minute) and returns its size.
func (s *stack) settleAudit(t *testing.T) uint64 {
	t.Helper()
	last := s.auditEvents(t)
	stable := 0
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && stable < 5; {
		time.Sleep(100 * time.Millisecond)
		n := s.auditEvents(t)
		if n == last {
			stable++
		} else {
			stable, last = 0, n
		}
	}
	return last
}

// profile starts a CPU profile of this process, which hosts the relay and
// the agents, when -bench-cpuprofile names a directory.
func (s *stack) profile(t *testing.T, cfg benchConfig, file, target string) (stop func()) {
	if cfg.profileDir == "" || target == TargetDirect || target == TargetPgBouncer {
		return func() {}
	}
	if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(cfg.profileDir, strings.ReplaceAll(file, " ", "-")+".pprof"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// loadCopyData fills copy_src with about mb megabytes of COPY text and
// makes copy_dst, which COPY FROM fills; both are the benchmark user's to
// read and write.
func (s *stack) loadCopyData(t *testing.T, mb int) {
	t.Helper()
	// A row is about 160 bytes of COPY text: an id, a 32-character hash,
	// a timestamp and a 100-character payload.
	rows := int64(mb) * 1_000_000 / 160
	s.adminSQL(t, "create table copy_src (id bigint, hash text, at timestamptz, payload text)")
	s.adminSQL(t, fmt.Sprintf("insert into copy_src select g, md5(g::text), timestamptz '2024-01-01' + g * interval '1 second', "+
		"repeat(md5((g * 7)::text), 3) || lpad(g::text, 4, '0') from generate_series(1, %d) g", rows))
	s.adminSQL(t, "vacuum analyze copy_src")
	s.adminSQL(t, "create unlogged table copy_dst (like copy_src)")
	s.adminSQL(t, "grant select on copy_src to "+benchUser)
	s.adminSQL(t, "grant select, insert on copy_dst to "+benchUser)
}

// copyBench times COPY of copy_src out to psql, then the same bytes back
// into copy_dst, through one target.
func (s *stack) copyBench(t *testing.T, cfg benchConfig, name string) CopyResult {
	t.Helper()
	data := filepath.Join(s.dir, "copy.data")
	if _, err := os.Stat(data); err != nil {
		// The data COPY FROM sends: the table's own COPY text, taken
		// directly and not timed.
		if _, err := s.copyOut(s.conns[TargetDirect], data); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(data)
	if err != nil {
		t.Fatal(err)
	}
	res := CopyResult{Target: name}
	m := s.measure(t, cfg, "copyout-"+name, name, func() error {
		start := time.Now()
		n, err := s.copyOut(s.conns[name], "")
		res.Out, res.OutBytes = time.Since(start), n
		if err != nil {
			return fmt.Errorf("COPY TO STDOUT: %w", err)
		}
		if n != fi.Size() {
			return fmt.Errorf("COPY TO STDOUT gave %d bytes, directly %d", n, fi.Size())
		}
		return nil
	})
	res.OutCPU, res.OutEvents = m.ProxyCPU, m.Events

	s.adminSQL(t, "truncate copy_dst")
	m = s.measure(t, cfg, "copyin-"+name, name, func() error {
		start := time.Now()
		err := s.copyIn(s.conns[name], data)
		res.In, res.InBytes = time.Since(start), fi.Size()
		if err != nil {
			return fmt.Errorf("COPY FROM STDIN: %w", err)
		}
		return nil
	})
	res.InCPU, res.InEvents = m.ProxyCPU, m.Events
	src := s.adminQuery(t, "select count(*) from copy_src")
	dst := s.adminQuery(t, "select count(*) from copy_dst")
	if src != dst {
		t.Fatalf("%s: COPY FROM STDIN stored %s rows of %s", name, dst, src)
	}
	t.Logf("COPY via %s: out %.1f MB/s, in %.1f MB/s", name, res.OutMBps(), res.InMBps())
	return res
}

// copyOut runs COPY copy_src TO STDOUT in psql and counts the bytes it
// prints; with file set, they are also written there.
func (s *stack) copyOut(c Conn, file string) (int64, error) {
	cmd := exec.Command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "copy copy_src to stdout")
	cmd.Env = c.Env()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var w io.Writer = io.Discard
	if file != "" {
		f, err := os.Create(file)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		bw := bufio.NewWriterSize(f, 1<<20)
		defer bw.Flush()
		w = bw
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	n, cerr := io.CopyBuffer(w, out, make([]byte, 1<<20))
	if err := cmd.Wait(); err != nil {
		return n, fmt.Errorf("%w: %s", err, stderr.String())
	}
	return n, cerr
}

// copyIn runs COPY copy_dst FROM STDIN in psql with file as its input.
func (s *stack) copyIn(c Conn, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "copy copy_dst from stdin")
	cmd.Env = c.Env()
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// psql runs one query through a target and returns its unaligned output.
func (s *stack) psql(c Conn, query string) (string, error) {
	cmd := exec.Command("psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", query)
	cmd.Env = c.Env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	return string(out), nil
}

// admin runs a client program as the superuser over the Unix socket.
func (s *stack) admin(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = s.adminEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func (s *stack) adminSQL(t *testing.T, sql string) {
	t.Helper()
	s.admin(t, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql)
}

func (s *stack) adminQuery(t *testing.T, sql string) string {
	t.Helper()
	return strings.TrimSpace(s.admin(t, "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql))
}
