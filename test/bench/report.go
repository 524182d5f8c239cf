package bench

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// Target names, in the order the report's columns show them.
const (
	TargetDirect    = "direct"
	TargetRelay     = "relay"
	TargetPgBouncer = "pgbouncer"
	TargetStrict    = "tollgate strict"
	TargetAsync     = "tollgate async"
	// TargetNoStore is a diagnostic: the agent in strict mode with a
	// recorder that discards every event, which separates the engine's
	// own cost (TLS, decoding, building events) from storing them.
	TargetNoStore = "agent, events discarded"
	// TargetUnsigned is a diagnostic too: strict audit with frames chained
	// but never signed, so that the signatures' share of strict's cost is
	// measured in the same run.
	TargetUnsigned = "strict, unsigned"
	// TargetStrictViaProxy is the strict agent reached as a database
	// behind NAT is: the client connects to the proxy's port, the proxy
	// routes on the SNI and splices the connection onto the agent's
	// reverse tunnel. Its distance to TargetStrict is what the proxy and
	// the tunnel cost.
	TargetStrictViaProxy = "strict via proxy"
)

// stores reports whether target is an agent that stores its events.
func stores(target string) bool {
	return target == TargetStrict || target == TargetAsync || target == TargetUnsigned || target == TargetStrictViaProxy
}

// Targets lists the targets measured by default, in column order.
var Targets = []string{TargetDirect, TargetRelay, TargetPgBouncer, TargetStrict, TargetAsync, TargetStrictViaProxy}

// Measure is one target's pgbench run with what it cost the proxy.
type Measure struct {
	PgbenchResult
	// ProxyCPU is the user and system time the proxy used during the run
	// (zero for direct): this process for the relay and the agents, the
	// pgbouncer process for pgbouncer. Unlike TPS it hardly depends on
	// what else the machine runs.
	ProxyCPU time.Duration
	// Events is how many audit events the run stored (agents only).
	Events uint64
}

// CPUPerTx is the proxy's CPU time per transaction in microseconds.
func (m Measure) CPUPerTx() float64 {
	if m.Transactions == 0 {
		return 0
	}
	return float64(m.ProxyCPU.Microseconds()) / float64(m.Transactions)
}

// EventsPerTx is the audit events stored per transaction.
func (m Measure) EventsPerTx() float64 {
	if m.Transactions == 0 {
		return 0
	}
	return float64(m.Events) / float64(m.Transactions)
}

// Cell is one pgbench configuration measured against every target.
type Cell struct {
	Mode    string
	Clients int
	Results map[string]Measure
}

// CopyResult is one target's bulk transfer: the same bytes out of and into
// the database.
type CopyResult struct {
	Target   string
	OutBytes int64
	Out      time.Duration
	InBytes  int64
	In       time.Duration
	// OutCPU and InCPU are the proxy's CPU time during each transfer.
	OutCPU, InCPU time.Duration
	// OutEvents and InEvents are the audit events each transfer stored
	// (agents only).
	OutEvents, InEvents uint64
}

// OutMBps and InMBps are throughputs in MB (10^6 bytes) per second.
func (c CopyResult) OutMBps() float64 { return mbps(c.OutBytes, c.Out) }
func (c CopyResult) InMBps() float64  { return mbps(c.InBytes, c.In) }

func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / 1e6 / d.Seconds()
}

// Report is one run of the benchmark: the machine, the settings and every
// measurement.
type Report struct {
	// Targets are the columns; Targets (the package variable) when nil.
	Targets  []string
	Machine  Machine
	Settings string
	Cells    []Cell
	Copy     []CopyResult
	// Idle is the memory of idle sessions through the proxy and one
	// tunnel, when measured.
	Idle  *IdleResult
	Notes []string
}

// IdleResult is the memory held by idle sessions opened to the strict
// agent directly and through the proxy and one reverse tunnel: the heap
// and goroutine stacks of this process, which holds the clients, the
// proxy and the agent, before and after the sessions were opened.
type IdleResult struct {
	Sessions int
	// Direct and ViaProxy are the bytes the sessions added, in total.
	Direct, ViaProxy int64
}

// DirectPerSession, ViaProxyPerSession and ProxyPerSession are bytes per
// session: directly, through the proxy, and what the proxy and the
// tunnel add.
func (r IdleResult) DirectPerSession() float64   { return perSession(r.Direct, r.Sessions) }
func (r IdleResult) ViaProxyPerSession() float64 { return perSession(r.ViaProxy, r.Sessions) }
func (r IdleResult) ProxyPerSession() float64    { return perSession(r.ViaProxy-r.Direct, r.Sessions) }

func perSession(b int64, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(b) / float64(n)
}

// Machine describes where the numbers were measured.
type Machine struct {
	CPUs            int
	CPUModel        string
	Kernel          string
	Date            time.Time
	LoadStart       string
	LoadEnd         string
	GoVersion       string
	PostgresVersion string
	PgbenchVersion  string
	PgbouncerVers   string
}

// DescribeMachine reads the CPU, kernel and load from /proc and the client
// programs' versions.
func DescribeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Date: time.Now().UTC(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.LoadStart = LoadAverage()
	m.PgbenchVersion = firstLine("pgbench", "--version")
	if p, ok := findPgbouncer(); ok {
		m.PgbouncerVers = firstLine(p, "--version")
	}
	return m
}

// LoadAverage is the first three fields of /proc/loadavg.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}

func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// ratio is a/b, or NaN's stand-in 0 when b is zero.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// Markdown renders the report: machine, pgbench TPS and latency tables,
// COPY throughput.
func (r *Report) Markdown() string {
	var b strings.Builder
	m := r.Machine
	b.WriteString("# Tollgate end-to-end benchmark (PostgreSQL)\n\n")
	b.WriteString("Written by `make bench` (test/bench, TestPgbenchReport with -bench-report); every figure comes from the same run.\n\n")
	fmt.Fprintf(&b, "- date: %s\n", m.Date.Format(time.RFC3339))
	fmt.Fprintf(&b, "- machine: %d CPUs, %s; kernel %s\n", m.CPUs, m.CPUModel, m.Kernel)
	fmt.Fprintf(&b, "- load average at start: %s; at end: %s (the machine is shared, so absolute figures are noisy; ratios within a row are measured minutes apart)\n", m.LoadStart, m.LoadEnd)
	fmt.Fprintf(&b, "- software: %s; %s; %s; %s\n", m.PostgresVersion, m.PgbenchVersion, m.PgbouncerVers, m.GoVersion)
	if r.Settings != "" {
		fmt.Fprintf(&b, "- settings: %s\n", r.Settings)
	}
	b.WriteString("\n")

	b.WriteString("## pgbench -S: transactions per second (ratio to direct)\n\n")
	r.cellTable(&b, func(m Measure) float64 { return m.TPS }, "%.0f", true)
	b.WriteString("\n## pgbench -S: mean latency in ms (ratio to direct)\n\n")
	r.cellTable(&b, func(m Measure) float64 { return m.LatencyMs }, "%.3f", false)
	b.WriteString("\n## pgbench -S: latency p50 / p99 in ms, and what each adds over the relay\n\n")
	b.WriteString("From pgbench's log of every transaction (one statement each). The added latency is the target's percentile less the relay's, from the same run.\n\n")
	r.percentileTable(&b)
	b.WriteString("\n## Proxy CPU time per transaction in µs (audit events per transaction)\n\n")
	b.WriteString("CPU used by the proxy alone during the run, divided by the transactions pgbench completed: the relay, the agents and the proxy are this process (the agents with the embedded JetStream server; strict via proxy is the proxy, the tunnel and the agent together), pgbouncer its own process. It depends far less on the machine's other load than TPS does.\n\n")
	r.cpuTable(&b)

	if len(r.Copy) > 0 {
		b.WriteString("\n## COPY through each target: MB/s (ratio to direct)\n\n")
		var direct, strict CopyResult
		viaProxy := false
		for _, c := range r.Copy {
			switch c.Target {
			case TargetDirect:
				direct = c
			case TargetStrict:
				strict = c
			case TargetStrictViaProxy:
				viaProxy = true
			}
		}
		b.WriteString("| target | COPY TO STDOUT | COPY FROM STDIN | MB each way | proxy CPU out / in (s) | audit events out / in |")
		if viaProxy {
			b.WriteString(" out / in to strict direct |")
		}
		b.WriteString("\n|---|---:|---:|---:|---:|---:|")
		if viaProxy {
			b.WriteString("---:|")
		}
		b.WriteString("\n")
		for _, c := range r.Copy {
			cpu, evs := "–", "–"
			if c.Target != TargetDirect {
				cpu = fmt.Sprintf("%.2f / %.2f", c.OutCPU.Seconds(), c.InCPU.Seconds())
			}
			if stores(c.Target) {
				evs = fmt.Sprintf("%d / %d", c.OutEvents, c.InEvents)
			}
			fmt.Fprintf(&b, "| %s | %.1f (%.2f×) | %.1f (%.2f×) | %.0f | %s | %s |", c.Target,
				c.OutMBps(), ratio(c.OutMBps(), direct.OutMBps()),
				c.InMBps(), ratio(c.InMBps(), direct.InMBps()), float64(c.OutBytes)/1e6, cpu, evs)
			switch {
			case c.Target == TargetStrictViaProxy:
				fmt.Fprintf(&b, " %.2f× / %.2f× |", ratio(c.OutMBps(), strict.OutMBps()), ratio(c.InMBps(), strict.InMBps()))
			case viaProxy:
				b.WriteString(" – |")
			}
			b.WriteString("\n")
		}
	}
	if r.Idle != nil {
		i := r.Idle
		fmt.Fprintf(&b, "\n## %d idle sessions over one tunnel: memory per session\n\n", i.Sessions)
		b.WriteString("Sessions opened to the strict agent, directly and through the proxy and its one reverse tunnel, and left idle after the TLS handshake (user certificate verified, the agent waiting for the startup message; no database connection yet). " +
			"The figure is the growth of this process's live heap and goroutine stacks (Go runtime, after collecting), which holds the clients, the proxy and the agent; the clients and the agent are the same on both paths, so the difference is what the proxy and the tunnel hold per session. " +
			"`BenchmarkIdleSessions` in proxy/ measures the same against a bare TLS sink, and runs in the Go benchmarks `make bench` starts with.\n\n")
		b.WriteString("| sessions | directly (KiB/session) | via proxy + tunnel (KiB/session) | proxy + tunnel add (KiB/session) |\n|---:|---:|---:|---:|\n")
		fmt.Fprintf(&b, "| %d | %.1f | %.1f | %.1f |\n", i.Sessions, i.DirectPerSession()/1024, i.ViaProxyPerSession()/1024, i.ProxyPerSession()/1024)
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

// cellTable writes one row per cell: each target's value with its ratio to
// direct; for throughput also Tollgate strict against the relay and
// pgbouncer.
func (r *Report) cellTable(b *strings.Builder, val func(Measure) float64, format string, throughput bool) {
	targets := r.targets()
	b.WriteString("| -M | clients |")
	for _, t := range targets {
		fmt.Fprintf(b, " %s |", t)
	}
	// The proxy's aim is measured against the strict agent reached
	// directly, the same agent without the proxy and the tunnel.
	viaProxy := throughput && slices.Contains(targets, TargetStrictViaProxy)
	if throughput {
		b.WriteString(" strict / relay | strict / pgbouncer |")
	}
	if viaProxy {
		b.WriteString(" via proxy / strict direct |")
	}
	b.WriteString("\n|---|---:|")
	for range targets {
		b.WriteString("---:|")
	}
	if throughput {
		b.WriteString("---:|---:|")
	}
	if viaProxy {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, c := range r.sortedCells() {
		fmt.Fprintf(b, "| %s | %d |", c.Mode, c.Clients)
		direct := val(c.Results[TargetDirect])
		for _, t := range targets {
			res, ok := c.Results[t]
			if !ok {
				b.WriteString(" – |")
				continue
			}
			v := val(res)
			if t == TargetDirect {
				fmt.Fprintf(b, " "+format+" |", v)
				continue
			}
			fmt.Fprintf(b, " "+format+" (%.2f×) |", v, ratio(v, direct))
		}
		if throughput {
			s := val(c.Results[TargetStrict])
			fmt.Fprintf(b, " %.2f× | %.2f× |", ratio(s, val(c.Results[TargetRelay])), ratio(s, val(c.Results[TargetPgBouncer])))
		}
		if viaProxy {
			fmt.Fprintf(b, " %.2f× |", ratio(val(c.Results[TargetStrictViaProxy]), val(c.Results[TargetStrict])))
		}
		b.WriteString("\n")
	}
}

func (r *Report) targets() []string {
	if r.Targets == nil {
		return Targets
	}
	return r.Targets
}

// sortedCells orders the rows: simple before prepared, then by clients.
func (r *Report) sortedCells() []Cell {
	cells := append([]Cell(nil), r.Cells...)
	sort.SliceStable(cells, func(i, j int) bool {
		if cells[i].Mode != cells[j].Mode {
			return cells[i].Mode > cells[j].Mode
		}
		return cells[i].Clients < cells[j].Clients
	})
	return cells
}

// cpuTable writes each proxy's CPU per transaction, with events per
// transaction for the agents.
func (r *Report) cpuTable(b *strings.Builder) {
	proxies := r.targets()[1:]
	b.WriteString("| -M | clients |")
	for _, t := range proxies {
		fmt.Fprintf(b, " %s |", t)
	}
	b.WriteString("\n|---|---:|")
	for range proxies {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, c := range r.sortedCells() {
		fmt.Fprintf(b, "| %s | %d |", c.Mode, c.Clients)
		for _, t := range proxies {
			m, ok := c.Results[t]
			switch {
			case !ok:
				b.WriteString(" – |")
			case stores(t):
				fmt.Fprintf(b, " %.1f (%.2f ev) |", m.CPUPerTx(), m.EventsPerTx())
			default:
				fmt.Fprintf(b, " %.1f |", m.CPUPerTx())
			}
		}
		b.WriteString("\n")
	}
}

// percentileTable writes one row per cell: each target's p50 / p99 and,
// for the agents, their difference to the relay's.
func (r *Report) percentileTable(b *strings.Builder) {
	targets := r.targets()
	b.WriteString("| -M | clients |")
	for _, t := range targets {
		fmt.Fprintf(b, " %s |", t)
	}
	b.WriteString("\n|---|---:|")
	for range targets {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, c := range r.sortedCells() {
		fmt.Fprintf(b, "| %s | %d |", c.Mode, c.Clients)
		relay, hasRelay := c.Results[TargetRelay]
		for _, t := range targets {
			res, ok := c.Results[t]
			if !ok || res.P50Ms == 0 {
				b.WriteString(" – |")
				continue
			}
			fmt.Fprintf(b, " %.3f / %.3f", res.P50Ms, res.P99Ms)
			if hasRelay && relay.P50Ms > 0 && stores(t) {
				fmt.Fprintf(b, " (%+.3f / %+.3f)", res.P50Ms-relay.P50Ms, res.P99Ms-relay.P99Ms)
			}
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}
}
