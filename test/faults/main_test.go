package faults

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The campaign's settings, from the environment so `make faults` can set
// them: TOLLGATE_FAULTS=1 runs the whole campaign (else a smoke version),
// TOLLGATE_FAULTS_DURATION the load per fault, TOLLGATE_FAULTS_RATE the
// pgbench rate (transactions/s, 0 = as fast as it goes),
// TOLLGATE_FAULTS_OUTAGE how long NATS stays down and the agent cut,
// TOLLGATE_FAULTS_LEAF_CUT how long the leaf is cut from its hub, and
// TOLLGATE_FAULTS_SYSBENCH_THREADS and TOLLGATE_FAULTS_SYSBENCH_RATE the
// MariaDB load (threads, transactions/s asked, 0 = as fast as it goes),
// TOLLGATE_FAULTS_REPORT the markdown file written at the end.
type settings struct {
	full     bool
	duration time.Duration
	rate     int
	clients  int
	// sbThreads and sbRate shape sysbench's load on MariaDB.
	sbThreads, sbRate int
	outage            time.Duration
	leafCut           time.Duration
	report            string
}

func loadSettings() (settings, error) {
	s := settings{full: os.Getenv("TOLLGATE_FAULTS") == "1", clients: 16, sbThreads: 4, sbRate: 10}
	s.duration, s.rate, s.outage, s.leafCut = 8*time.Second, 150, 2*time.Second, 5*time.Second
	if s.full {
		s.duration, s.rate, s.outage, s.leafCut = 60*time.Second, 300, 10*time.Second, 30*time.Second
		s.sbThreads, s.sbRate = 16, 30
	}
	var err error
	dur := func(name string, d *time.Duration) {
		if v := os.Getenv(name); v != "" && err == nil {
			if *d, err = time.ParseDuration(v); err != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	}
	dur("TOLLGATE_FAULTS_DURATION", &s.duration)
	dur("TOLLGATE_FAULTS_OUTAGE", &s.outage)
	dur("TOLLGATE_FAULTS_LEAF_CUT", &s.leafCut)
	if v := os.Getenv("TOLLGATE_FAULTS_RATE"); v != "" && err == nil {
		if s.rate, err = strconv.Atoi(v); err != nil {
			err = fmt.Errorf("TOLLGATE_FAULTS_RATE=%q: %w", v, err)
		}
	}
	for name, p := range map[string]*int{"TOLLGATE_FAULTS_SYSBENCH_THREADS": &s.sbThreads, "TOLLGATE_FAULTS_SYSBENCH_RATE": &s.sbRate} {
		if v := os.Getenv(name); v != "" && err == nil {
			if *p, err = strconv.Atoi(v); err != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	}
	s.report = os.Getenv("TOLLGATE_FAULTS_REPORT")
	return s, err
}

var (
	cfg    settings
	report Report

	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	var err error
	if cfg, err = loadSettings(); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(2)
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if cfg.report != "" && code == 0 {
		if err := report.Write(cfg.report, "make faults"); err != nil {
			fmt.Fprintln(os.Stderr, "faults: report:", err)
			code = 1
		} else {
			fmt.Println("faults: report written to", cfg.report)
		}
	}
	os.Exit(code)
}

// binaries builds tollgate and nats-server (from the pinned module) once.
func binaries(t testing.TB) Binaries {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "tollgate-faults-bin-"); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", buildDir+"/", "github.com/tollgate-db/tollgate/cmd/tollgate", "github.com/nats-io/nats-server/v2")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	for _, p := range []string{"pgbench", "psql"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s is not installed (Debian: postgresql-client): %v", p, err)
		}
	}
	return binariesIn(buildDir)
}
