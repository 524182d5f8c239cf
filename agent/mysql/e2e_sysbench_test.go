package mysql_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent/agenttest"
)

// sysbench runs sysbench's oltp workloads against the agent's direct port
// with TLS: sysbench 1.0 reads client-cert.pem, client-key.pem and
// cacert.pem from its working directory.
func (s *stack) sysbench(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	if _, err := exec.LookPath("sysbench"); err != nil {
		t.Fatal("sysbench not found: install the Debian package sysbench")
	}
	dir := filepath.Join(s.Dir, "sysbench")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"client-cert.pem": s.UserCertFile, "client-key.pem": s.UserKeyFile, "cacert.pem": s.HostCAFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		agenttest.WriteFile(t, dir, name, b)
	}
	h, p := hostPort(s.direct)
	base := []string{"--db-driver=mysql", "--mysql-host=" + h, "--mysql-port=" + p, "--mysql-user=sbtest",
		"--mysql-db=test", "--mysql-ssl=on", "--tables=1", "--table-size=1000"}
	cmd := exec.Command("sysbench", append(base, args...)...)
	cmd.Dir = dir
	return cmd
}

func TestSysbenchGroundTruth(t *testing.T) {
	s := newStack(t, stackOptions{users: []string{"sbtest"}})
	if out, err := s.sysbench(t, "oltp_read_write", "prepare").CombinedOutput(); err != nil {
		t.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	out, err := s.sysbench(t, "oltp_read_write", "--threads=4", "--time=5", "run").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "transactions:") {
		t.Fatalf("sysbench run: %v\n%s", err, out)
	}
	// prepare's session and run's four.
	evs := s.WaitAudit(t, "sessions end", agenttest.Count("db.session.end", 5))
	agenttest.CheckGapless(t, evs)
	// Four writers on a thousand rows deadlock now and then (sysbench
	// retries those); any other error would be the agent's.
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		if code := strOr(r["db_error_code"]); code != "" && code != "1213" && code != "1205" && code != "1020" {
			t.Fatalf("unexpected error %v", r)
		}
	}
	n := groundTruth(t, s, evs, "sbtest")
	if n < 1000 {
		t.Fatalf("only %d statements of sbtest in the database log", n)
	}
	t.Logf("%d statements in the general log, each with its audit event; %d events in all", n, len(evs))

	// The store stops mid-run: statements are refused with a clear error
	// and none reaches the database; the run goes on once it is back.
	cmd := s.sysbench(t, "oltp_read_write", "--threads=4", "--time=5", "--mysql-ignore-errors=all", "run")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)
	s.NATS.Stop()
	time.Sleep(1500 * time.Millisecond)
	if err := s.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sysbench during the outage: %v\n%s", err, buf.String())
	}
	if sysbenchCount(buf.Bytes(), "ignored errors") == 0 {
		t.Fatalf("no statement was refused during the outage:\n%s", buf.String())
	}
	if sysbenchCount(buf.Bytes(), "transactions") == 0 {
		t.Fatalf("the run did not go on:\n%s", buf.String())
	}
	evs = s.WaitAudit(t, "sessions end with their events stored", settled(9))
	agenttest.CheckGapless(t, evs)
	refused := 0
	for _, r := range agenttest.OfType(evs, "db.session.result") {
		if r["db_error_code"] == "1105" && strings.Contains(r["db_error_message"].(string), "audit store unavailable") {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("no refusal recorded")
	}
	n = groundTruth(t, s, evs, "sbtest")
	t.Logf("outage run: %d refusals recorded; %d logged statements, each with its event", refused, n)
}

// sysbenchCount reads "name: N" from sysbench's report.
func sysbenchCount(out []byte, name string) int {
	m := regexp.MustCompile(regexp.QuoteMeta(name) + `:\s+(\d+)`).FindSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}
