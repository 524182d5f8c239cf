package exportertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters"
)

// childEnv makes a test binary run one exporter instead of its tests.
const childEnv = "TOLLGATE_EXPORTER_CHILD"

type childSpec struct {
	NATS string `json:"nats"`
	YAML string `json:"yaml"`
}

// MaybeChild runs the exporter a parent asked for and exits, when the
// process is such a child; call it first in TestMain. The child exits 0 on
// SIGTERM after a clean shutdown; SIGKILL is the crash the tests want.
func MaybeChild() {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return
	}
	var s childSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	if err := runChild(s); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runChild(s childSpec) error {
	if p := os.Getenv("TOLLGATE_EXPORTER_CPUPROFILE"); p != "" {
		// For profiling the drain benchmarks.
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(s.NATS, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	pub, err := events.NewPublisher(js, Cluster)
	if err != nil {
		return err
	}
	defer pub.Close(context.Background())
	c, err := config.Parse([]byte(exportersDoc(s.YAML)))
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	x, err := exporters.Build(ctx, 0, c.Exporters[0], exporters.Deps{JS: js, Publisher: pub, Log: log})
	if err != nil {
		return err
	}
	// The parent waits for this line before it counts on the child.
	fmt.Println("exporter child ready")
	return x.Run(ctx)
}

// exportersDoc wraps one exporter's YAML into a configuration file.
func exportersDoc(exporterYAML string) string {
	var b strings.Builder
	b.WriteString("exporters:\n")
	for i, line := range strings.Split(strings.TrimRight(exporterYAML, "\n"), "\n") {
		if i == 0 {
			b.WriteString("  - " + line + "\n")
		} else {
			b.WriteString("    " + line + "\n")
		}
	}
	return b.String()
}

// Child is an exporter running in a child process (the test binary again).
type Child struct {
	cmd  *exec.Cmd
	done chan error
}

// StartChild runs exporterYAML in a child process against the server at
// natsURL; the test binary's TestMain must call MaybeChild.
func StartChild(t testing.TB, natsURL, exporterYAML string) *Child {
	t.Helper()
	spec, _ := json.Marshal(childSpec{NATS: natsURL, YAML: exporterYAML})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &Child{cmd: cmd, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "exporter child ready" {
				close(ready)
			}
		}
		c.done <- cmd.Wait()
	}()
	t.Cleanup(func() { c.Kill() })
	select {
	case <-ready:
	case err := <-c.done:
		c.done <- err
		t.Fatalf("exporter child exited before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("exporter child not ready after 30s")
	}
	return c
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Kill sends SIGKILL and waits: the crash.
func (c *Child) Kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	c.wait()
}

// Stop sends SIGTERM and waits for the clean shutdown.
func (c *Child) Stop(t testing.TB) {
	t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.wait(); err != nil {
		t.Fatalf("exporter child: %v", err)
	}
}

func (c *Child) wait() error {
	select {
	case err := <-c.done:
		c.done <- err
		return err
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		return fmt.Errorf("exporter child did not exit within 30s")
	}
}

// CPUTime is the processor time (user and system) the child used so far.
func (c *Child) CPUTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may
	// hold spaces: utime and stime are the 12th and 13th.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", c.cmd.Process.Pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %v %v", c.cmd.Process.Pid, err1, err2)
	}
	// Linux reports clock ticks of 1/100 s (USER_HZ).
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// PeakRSS is the child's peak resident memory so far, in bytes (VmHWM).
func (c *Child) PeakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", c.cmd.Process.Pid)
}

// BenchEvents is how many events the drain benchmarks use:
// TOLLGATE_BENCH_EVENTS, else def.
func BenchEvents(def int) int {
	if v := os.Getenv("TOLLGATE_BENCH_EVENTS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	return def
}

// Drain runs exporterYAML (its name must be name) in a child process
// until it has confirmed every stored event, and reports the time it took
// and the child's peak resident memory.
//
// TOLLGATE_BENCH_SETTINGS adds settings (e.g. "batch_size: 5000",
// several separated by ';'); exporterYAML must end with its settings.
func (e *Env) Drain(b *testing.B, name, exporterYAML string) (took time.Duration, peakRSS int64) {
	took, peakRSS, _ = e.DrainCPU(b, name, exporterYAML)
	return took, peakRSS
}

// DrainCPU is Drain that also reports the processor time the child used.
func (e *Env) DrainCPU(b *testing.B, name, exporterYAML string) (took time.Duration, peakRSS int64, cpu time.Duration) {
	b.Helper()
	if extra := os.Getenv("TOLLGATE_BENCH_SETTINGS"); extra != "" {
		for _, kv := range strings.Split(extra, ";") {
			exporterYAML += "\n  " + strings.TrimSpace(kv)
		}
	}
	c := StartChild(b, e.NATS.URL(), exporterYAML)
	start := time.Now()
	for {
		done := true
		for _, s := range []string{events.AuditStream, events.StateStream} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			cons, err := e.JS.Consumer(ctx, s, exporters.ConsumerName(name))
			var ci *jetstream.ConsumerInfo
			if err == nil {
				ci, err = cons.Info(ctx)
			}
			cancel()
			if err != nil || ci.NumPending != 0 || ci.NumAckPending != 0 {
				done = false
				break
			}
		}
		if done {
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatal("drain did not finish within 10 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	took = time.Since(start)
	peakRSS, err := c.PeakRSS()
	if err != nil {
		b.Fatal(err)
	}
	if cpu, err = c.CPUTime(); err != nil {
		b.Fatal(err)
	}
	c.Stop(b)
	b.ReportMetric(float64(cpu.Microseconds())/float64(max(1, countStored(b, e))), "child-CPU-µs/event")
	b.ReportMetric(loadAverage(), "load-avg")
	return took, peakRSS, cpu
}

// countStored is the number of events in the AUDIT stream, a frame's
// events each counted.
func countStored(t testing.TB, e *Env) uint64 {
	var n uint64
	e.EachEvent(t, func(uint64, []byte) { n++ })
	return n
}

// loadAverage is the one-minute load average of the machine: the drain
// figures mean little without it on a shared machine.
func loadAverage() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// Report puts a drain's figures into the benchmark's output.
func Report(b *testing.B, n int, took time.Duration, peakRSS int64) {
	b.ReportMetric(float64(n)/took.Seconds(), "events/s")
	b.ReportMetric(float64(peakRSS)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(n), "events")
}
