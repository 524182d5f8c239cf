package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pgbench15Output is what pgbench 15 prints after pgbench -n -S -M prepared.
const pgbench15Output = `pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 254031
number of failed transactions: 0 (0.000%)
latency average = 0.313 ms
initial connection time = 21.520 ms
tps = 25410.348125 (without initial connection time)
`

func TestParsePgbench(t *testing.T) {
	r, err := ParsePgbench(pgbench15Output)
	if err != nil {
		t.Fatal(err)
	}
	want := PgbenchResult{Transactions: 254031, TPS: 25410.348125, LatencyMs: 0.313}
	if r != want {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	failed := strings.Replace(pgbench15Output, "failed transactions: 0 (0.000%)", "failed transactions: 7 (0.003%)", 1)
	if r, err := ParsePgbench(failed); err != nil || r.Failed != 7 {
		t.Fatalf("failed transactions: %+v %v", r, err)
	}
}

func TestParsePgbenchRefusesIncompleteOutput(t *testing.T) {
	for name, out := range map[string]string{
		"connection refused": "pgbench: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n",
		"no tps":             strings.Replace(pgbench15Output, "tps = ", "tpx = ", 1),
		"no latency":         strings.Replace(pgbench15Output, "latency average", "latency median", 1),
	} {
		if _, err := ParsePgbench(out); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

func TestPgbenchArgs(t *testing.T) {
	p := Pgbench{Mode: "simple", Clients: 1, Duration: 10 * time.Second}
	if got := strings.Join(p.Args(), " "); got != "-n -b select-only -M simple -c 1 -j 1 -T 10" {
		t.Fatalf("one client: %s", got)
	}
	p = Pgbench{Mode: "prepared", Clients: 32, Duration: 1500 * time.Millisecond}
	if got := strings.Join(p.Args(), " "); got != "-n -b select-only -M prepared -c 32 -j 2 -T 2" {
		t.Fatalf("32 clients: %s", got)
	}
}

func TestConnEnvCarriesTLS(t *testing.T) {
	env := strings.Join(Conn{Host: "127.0.0.1", Port: "5", User: "u", DBName: "d", SSLMode: "verify-full",
		SSLRootCert: "/ca", SSLCert: "/c", SSLKey: "/k"}.Env(), "\n")
	for _, want := range []string{"PGSSLMODE=verify-full", "PGSSLROOTCERT=/ca", "PGSSLCERT=/c", "PGSSLKEY=/k", "PGGSSENCMODE=disable", "PGHOST=127.0.0.1"} {
		if !strings.Contains(env, want) {
			t.Errorf("env lacks %s:\n%s", want, env)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and a parenthesis must not shift fields.
	stat := "4242 (pg bouncer) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 1 0 100 0 0"
	d, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if d != 1750*time.Millisecond {
		t.Fatalf("got %s, want 1.75s", d)
	}
	if _, err := parseStatCPU("4242 (short) S 1"); err == nil {
		t.Fatal("short stat parsed")
	}
}

func TestReportRatios(t *testing.T) {
	m := func(tps, lat float64, tx int64, cpu time.Duration, ev uint64) Measure {
		return Measure{PgbenchResult: PgbenchResult{TPS: tps, LatencyMs: lat, Transactions: tx}, ProxyCPU: cpu, Events: ev}
	}
	r := &Report{
		Cells: []Cell{{Mode: "prepared", Clients: 8, Results: map[string]Measure{
			TargetDirect: m(20000, 0.4, 200000, 0, 0), TargetRelay: m(10000, 0.8, 100000, 2*time.Second, 0),
			TargetPgBouncer: m(8000, 1, 80000, time.Second, 0), TargetStrict: m(9000, 0.9, 90000, 3*time.Second, 270000),
			TargetAsync: m(9500, 0.85, 95000, 3*time.Second, 285000), TargetStrictViaProxy: m(8100, 1, 81000, 3*time.Second, 243000),
		}}},
		Copy: []CopyResult{
			{Target: TargetDirect, OutBytes: 300e6, Out: 3 * time.Second, InBytes: 300e6, In: 6 * time.Second},
			{Target: TargetStrict, OutBytes: 300e6, Out: 4 * time.Second, InBytes: 300e6, In: 6 * time.Second, OutCPU: time.Second, InCPU: 2 * time.Second},
			{Target: TargetStrictViaProxy, OutBytes: 300e6, Out: 5 * time.Second, InBytes: 300e6, In: 6 * time.Second, OutCPU: time.Second, InCPU: 2 * time.Second},
		},
		Idle: &IdleResult{Sessions: 1000, Direct: 40 << 20, ViaProxy: 50 << 20},
	}
	md := r.Markdown()
	for _, want := range []string{
		"| -M | clients | direct | relay | pgbouncer | tollgate strict | tollgate async | strict via proxy | strict / relay | strict / pgbouncer | via proxy / strict direct |",
		"| prepared | 8 | 20000 | 10000 (0.50×) | 8000 (0.40×) | 9000 (0.45×) | 9500 (0.47×) | 8100 (0.41×) | 0.90× | 1.12× | 0.90× |",
		"| prepared | 8 | 20.0 | 12.5 | 33.3 (3.00 ev) | 31.6 (3.00 ev) | 37.0 (3.00 ev) |",
		"| tollgate strict | 75.0 (0.75×) | 50.0 (1.00×) | 300 | 1.00 / 2.00 | 0 / 0 | – |",
		"| strict via proxy | 60.0 (0.60×) | 50.0 (1.00×) | 300 | 1.00 / 2.00 | 0 / 0 | 0.80× / 1.00× |",
		"## 1000 idle sessions over one tunnel: memory per session",
		"| 1000 | 41.0 | 51.2 | 10.2 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}

	// Without the proxy's target the report has none of its columns.
	r = &Report{Targets: []string{TargetDirect, TargetRelay, TargetPgBouncer, TargetStrict},
		Cells: r.Cells, Copy: r.Copy[:2]}
	md = r.Markdown()
	for _, unwanted := range []string{"via proxy / strict", "to strict direct", "idle sessions"} {
		if strings.Contains(md, unwanted) {
			t.Errorf("report without the proxy's target has %q:\n%s", unwanted, md)
		}
	}
	if want := "| tollgate strict | 75.0 (0.75×) | 50.0 (1.00×) | 300 | 1.00 / 2.00 | 0 / 0 |\n"; !strings.Contains(md, want) {
		t.Errorf("report lacks %q:\n%s", want, md)
	}
}

// pgbench's per-transaction logs (one per thread) give the percentiles,
// and are removed once read.
func TestLatencyPercentiles(t *testing.T) {
	dir := t.TempDir()
	var a, b strings.Builder
	for i := 1; i <= 100; i++ {
		w := &a
		if i%2 == 0 {
			w = &b
		}
		fmt.Fprintf(w, "0 %d %d 0 1765000000 123456\n", i, i*1000)
	}
	for name, data := range map[string]string{"pgbench_log.4242": a.String(), "pgbench_log.4242.1": b.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p50, p99, err := latencyPercentiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p50 != 51 || p99 != 100 {
		t.Fatalf("p50 %v p99 %v, want 51 and 100", p50, p99)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("logs left: %v", left)
	}
	if _, _, err := latencyPercentiles(dir); err == nil {
		t.Fatal("no logs gave no error")
	}
}
