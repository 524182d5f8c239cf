package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// Conn is how a libpq client (pgbench, psql) reaches one target: the
// environment variables libpq reads, so the same program runs unchanged
// against the database, the relay, pgbouncer and the agent.
type Conn struct {
	Host, Port, User, DBName string
	// HostAddr, when set, is the IP address libpq connects to; Host is
	// then only the name it sends as SNI and checks the certificate
	// against (libpq sends no SNI for an IP address, and the proxy
	// routes on SNI alone).
	HostAddr string
	// SSLMode is require, verify-ca or verify-full; every target here
	// speaks TLS.
	SSLMode     string
	SSLRootCert string
	// SSLCert and SSLKey are the client certificate, sent when the server
	// asks for one.
	SSLCert, SSLKey string
}

// Env is the libpq environment for c. GSSAPI encryption is turned off so
// libpq does not try it before TLS.
func (c Conn) Env() []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "TZ=UTC",
		"PGHOST=" + c.Host, "PGPORT=" + c.Port, "PGUSER=" + c.User, "PGDATABASE=" + c.DBName,
		"PGSSLMODE=" + c.SSLMode, "PGGSSENCMODE=disable", "PGAPPNAME=tollgate-bench",
	}
	if c.HostAddr != "" {
		env = append(env, "PGHOSTADDR="+c.HostAddr)
	}
	if c.SSLRootCert != "" {
		env = append(env, "PGSSLROOTCERT="+c.SSLRootCert)
	}
	if c.SSLCert != "" {
		env = append(env, "PGSSLCERT="+c.SSLCert, "PGSSLKEY="+c.SSLKey)
	}
	return env
}

// Pgbench is one pgbench run.
type Pgbench struct {
	Conn Conn
	// Mode is the query protocol: simple, extended or prepared.
	Mode     string
	Clients  int
	Duration time.Duration
	// Script is the built-in script, "select-only" for pgbench -S.
	Script string
	// LogDir, when set, makes pgbench log every transaction's latency
	// there (--log), from which Run computes the percentiles.
	LogDir string
}

// PgbenchResult is what pgbench reports at the end of a run.
type PgbenchResult struct {
	Transactions int64
	Failed       int64
	TPS          float64
	// LatencyMs is pgbench's "latency average", in milliseconds.
	LatencyMs float64
	// P50Ms and P99Ms are the median and 99th percentile of the
	// transactions' latencies (with LogDir), in milliseconds.
	P50Ms, P99Ms float64
}

// Threads is pgbench's -j: two, the machine's core count, or fewer when
// there are fewer clients (pgbench refuses more threads than clients).
func (p Pgbench) Threads() int {
	if p.Clients < 2 {
		return 1
	}
	return 2
}

// Args is pgbench's command line. -n skips the VACUUM pgbench would run
// first: the benchmark user does not own the tables, and they were
// vacuumed after loading.
func (p Pgbench) Args() []string {
	script := p.Script
	if script == "" {
		script = "select-only"
	}
	secs := int(p.Duration.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	args := []string{"-n", "-b", script, "-M", p.Mode, "-c", strconv.Itoa(p.Clients),
		"-j", strconv.Itoa(p.Threads()), "-T", strconv.Itoa(secs)}
	if p.LogDir != "" {
		args = append(args, "--log", "--log-prefix="+filepath.Join(p.LogDir, "pgbench_log"))
	}
	return args
}

// Run runs pgbench and parses its report; the output is returned too, for
// errors.
func (p Pgbench) Run(ctx context.Context) (PgbenchResult, string, error) {
	path, err := exec.LookPath("pgbench")
	if err != nil {
		return PgbenchResult{}, "", errors.New("pgbench not found: install postgresql-client-15")
	}
	// pgbench ends on its own after -T; the margin covers connecting.
	ctx, cancel := context.WithTimeout(ctx, p.Duration+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, p.Args()...)
	cmd.Env = p.Conn.Env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if err != nil {
		return PgbenchResult{}, out.String(), fmt.Errorf("pgbench %v: %w", p.Args(), err)
	}
	res, err := ParsePgbench(out.String())
	if err == nil && p.LogDir != "" {
		res.P50Ms, res.P99Ms, err = latencyPercentiles(p.LogDir)
	}
	return res, out.String(), err
}

// latencyPercentiles reads pgbench's per-transaction logs in dir (one file
// per thread: "client_id transaction_no time script_no time_epoch
// time_us", time in µs), removes them, and returns the median and 99th
// percentile in milliseconds.
func latencyPercentiles(dir string) (p50, p99 float64, err error) {
	files, err := filepath.Glob(filepath.Join(dir, "pgbench_log.*"))
	if err != nil || len(files) == 0 {
		return 0, 0, fmt.Errorf("pgbench wrote no transaction log in %s (%v)", dir, err)
	}
	var us []int64
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return 0, 0, err
		}
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			fields := bytes.Fields(line)
			if len(fields) < 3 {
				continue
			}
			v, err := strconv.ParseInt(string(fields[2]), 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("pgbench log %s: %q: %w", f, line, err)
			}
			us = append(us, v)
		}
		_ = os.Remove(f)
	}
	if len(us) == 0 {
		return 0, 0, fmt.Errorf("pgbench logs in %s hold no transaction", dir)
	}
	slices.Sort(us)
	at := func(q float64) float64 { return float64(us[min(int(q*float64(len(us))), len(us)-1)]) / 1000 }
	return at(0.50), at(0.99), nil
}

var (
	pgbenchProcessed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	pgbenchFailed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	pgbenchTPS       = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	pgbenchLatency   = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
)

// ParsePgbench reads the summary pgbench (version 15) prints after a run.
func ParsePgbench(out string) (PgbenchResult, error) {
	var r PgbenchResult
	m := pgbenchProcessed.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("pgbench output has no %q line:\n%s", "number of transactions actually processed", out)
	}
	r.Transactions, _ = strconv.ParseInt(m[1], 10, 64)
	if m := pgbenchFailed.FindStringSubmatch(out); m != nil {
		r.Failed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	m = pgbenchTPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("pgbench output has no tps line:\n%s", out)
	}
	var err error
	if r.TPS, err = strconv.ParseFloat(m[1], 64); err != nil {
		return r, fmt.Errorf("pgbench tps %q: %w", m[1], err)
	}
	m = pgbenchLatency.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("pgbench output has no latency average line:\n%s", out)
	}
	if r.LatencyMs, err = strconv.ParseFloat(m[1], 64); err != nil {
		return r, fmt.Errorf("pgbench latency %q: %w", m[1], err)
	}
	return r, nil
}
