package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPortInUseFailsAtOnce holds a port and starts the daemon and the demo
// on it: each fails within seconds, naming the address and what to change,
// and the demo before any PostgreSQL.
func TestPortInUseFailsAtOnce(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()

	bin := authTestBinary(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(cfgFile, []byte("cluster_name: ci\nnats:\n  embedded:\n    listen: 127.0.0.1:0\n"+
		"proxy:\n  listen: "+addr+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "TOLLGATE_CONFIG=")
		began := time.Now()
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("tollgate %v succeeded with %s in use:\n%s", args, addr, out)
		}
		if d := time.Since(began); d > 5*time.Second {
			t.Fatalf("tollgate %v took %s to fail", args, d)
		}
		return string(out)
	}
	out := run("start", "--config", cfgFile, "--data-dir", filepath.Join(dir, "data"))
	for _, want := range []string{"address " + addr + " is already in use", "change proxy.listen in " + cfgFile} {
		if !strings.Contains(out, want) {
			t.Errorf("start: %q lacks %q", out, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "nats")); err == nil {
		t.Errorf("start made a NATS store before failing")
	}

	demoDir := filepath.Join(dir, "demo")
	out = run("demo", "--data-dir", demoDir, "--nats-listen=127.0.0.1:0", "--proxy-listen=127.0.0.1:0", "--agent-listen="+addr)
	for _, want := range []string{"address " + addr + " is already in use", "change --agent-listen"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo: %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "PostgreSQL") {
		t.Errorf("demo started a PostgreSQL before failing:\n%s", out)
	}
	// The MariaDB port too is tried before any database starts.
	_, port, _ := net.SplitHostPort(addr)
	out = run("demo", "--data-dir", demoDir, "--nats-listen=127.0.0.1:0", "--proxy-listen=127.0.0.1:0", "--agent-listen=127.0.0.1:0", "--mariadb-port="+port)
	for _, want := range []string{"address " + addr + " is already in use", "change --mariadb-port"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo: %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "PostgreSQL") || strings.Contains(out, "MariaDB running") {
		t.Errorf("demo started a database before failing:\n%s", out)
	}
	// --health-listen is tried with the others, before NATS starts.
	free := filepath.Join(dir, "free.yaml")
	if err := os.WriteFile(free, []byte("nats:\n  embedded:\n    listen: 127.0.0.1:0\nproxy:\n  listen: 127.0.0.1:0\n"+
		"db_service:\n  listen: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out = run("start", "--config", free, "--data-dir", filepath.Join(dir, "data2"), "--health-listen="+addr)
	if !strings.Contains(out, "address "+addr+" is already in use") || !strings.Contains(out, "change --health-listen") {
		t.Errorf("start --health-listen: %q", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data2", "nats")); err == nil {
		t.Errorf("start made a NATS store before failing")
	}
}
