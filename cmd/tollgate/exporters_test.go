package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/exporters/ocsfcheck"
	"github.com/tollgate-db/tollgate/test/harness"
)

// TestExporterRole runs `tollgate start --roles=exporter` (the binary)
// with two file exporters, stores events in its NATS, and checks the
// files, `tollgate exporters ls`, the Prometheus metrics and
// `tollgate audit tail --format=ocsf|cloudevents`.
func TestExporterRole(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "tollgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	natsAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	native, ocsf := filepath.Join(dir, "out", "native.jsonl"), filepath.Join(dir, "out", "ocsf.jsonl")
	cfgFile := filepath.Join(dir, "tollgate.yaml")
	cfg := fmt.Sprintf(`cluster_name: ci
data_dir: %s
nats:
  embedded:
    listen: %s
exporters:
  - name: native-file
    type: file
    settings:
      path: %s
      linger: 20ms
  - name: ocsf-file
    type: file
    format: ocsf
    filter:
      types: [db.session.*]
    settings:
      path: %s
      linger: 20ms
`, filepath.Join(dir, "data"), natsAddr, native, ocsf)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	if out, err := exec.Command(bin, "start", "--config", cfgFile, "--roles=exporter,nosuch").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), `--roles: "nosuch" is not a role`) {
		t.Fatalf("--roles=nosuch: %v: %s", err, out)
	}

	cmd := exec.Command(bin, "start", "--config", cfgFile, "--roles=exporter", "--metrics-listen=127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var log bytes.Buffer
	started := make(chan string, 1)
	go func() {
		metricsRE := regexp.MustCompile(`exporter metrics listening.*addr=(http://\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if m := metricsRE.FindStringSubmatch(sc.Text()); m != nil {
				started <- m[1]
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	var metricsURL string
	select {
	case metricsURL = <-started:
	case err := <-exited:
		t.Fatalf("tollgate exited: %v\n%s", err, log.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("no metrics listener after 60s:\n%s", log.String())
	}

	// Store events as an agent would: queries, and one login (not a
	// session event: the OCSF exporter's filter, applied by the server to
	// its consumer's subjects, leaves it out).
	creds, err := natsserver.LoadCredentials(filepath.Join(dir, "data", "nats-auth"))
	if err != nil {
		t.Fatal(err)
	}
	as, err := creds.Options(natsserver.Agent)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("tls://"+natsAddr, append(as, nats.RootCAs(filepath.Join(creds.Dir, natsserver.TLSCertFile)))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	pub, err := events.NewPublisher(js, "ci")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 300
	var batch []events.Event
	for i := 0; i < n; i++ {
		q := &events.Query{Session: events.Session{SID: "S1", EI: uint64(i)}, Query: fmt.Sprintf("SELECT %d", i),
			Database: events.Database{Service: "pg", Protocol: "postgres", URI: "127.0.0.1:5432", User: "app", Name: "db"}}
		q.Envelope.User = "alice"
		batch = append(batch, q)
	}
	login := &events.UserLogin{Status: events.Status{Success: true}, Method: events.LoginPassword}
	login.User = "alice"
	batch = append(batch, login)
	if err := pub.PublishBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}

	countLines := func(p string) int {
		b, _ := os.ReadFile(p)
		return bytes.Count(b, []byte("\n"))
	}
	deadline := time.Now().Add(60 * time.Second)
	for countLines(native) < n+1 || countLines(ocsf) < n {
		if time.Now().After(deadline) {
			t.Fatalf("files hold %d and %d lines after 60s\n%s", countLines(native), countLines(ocsf), log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(ocsf)
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if err := ocsfcheck.Check(l); err != nil {
			t.Fatalf("%v\n%s", err, l)
		}
	}
	if c := countLines(ocsf); c != n {
		t.Fatalf("ocsf file: %d lines, want %d (the login filtered out)", c, n)
	}

	// exporters ls, once the counters are saved (every 2s).
	var ls []struct {
		Name  string
		Lag   uint64
		Stats struct {
			Delivered, Filtered, DeadLetters uint64
			Retries                          uint64
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err := exec.Command(bin, "exporters", "ls", "--format=json", "--config", cfgFile).Output()
		if err != nil {
			t.Fatalf("exporters ls: %v", err)
		}
		if err := json.Unmarshal(out, &ls); err != nil {
			t.Fatalf("exporters ls: %v: %s", err, out)
		}
		if len(ls) == 2 && ls[0].Stats.Delivered == n+1 && ls[1].Stats.Delivered == n && ls[0].Lag == 0 && ls[1].Lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporters ls: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, err := exec.Command(bin, "exporters", "ls", "--config", cfgFile).Output()
	if err != nil || !regexp.MustCompile(`(?m)^native-file\s+file\s+0\s+301\s+0\s+0\s`).Match(out) {
		t.Fatalf("exporters ls table: %v\n%s", err, out)
	}

	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(mb), `tollgate_exporter_delivered_total{exporter="native-file"} 301`) ||
		!strings.Contains(string(mb), `tollgate_exporter_delivered_total{exporter="ocsf-file"} 300`) {
		t.Fatalf("metrics:\n%s", mb)
	}

	for _, f := range []string{"ocsf", "cloudevents"} {
		out, err := exec.Command(bin, "audit", "tail", "--format="+f, "--config", cfgFile).Output()
		if err != nil {
			t.Fatalf("audit tail --format=%s: %v", f, err)
		}
		lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
		if len(lines) != n+1 {
			t.Fatalf("audit tail --format=%s: %d lines, want %d", f, len(lines), n+1)
		}
		for _, l := range lines {
			if f == "ocsf" {
				if err := ocsfcheck.Check(l); err != nil {
					t.Fatalf("%v\n%s", err, l)
				}
				continue
			}
			var ce struct {
				SpecVersion string
				ID          string
				Data        struct{ ID string }
			}
			if err := json.Unmarshal(l, &ce); err != nil || ce.SpecVersion != "1.0" || ce.ID == "" || ce.Data.ID != ce.ID {
				t.Fatalf("not a CloudEvent of the event: %v: %s", err, l)
			}
		}
	}

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("tollgate exited with %v\n%s", err, log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("tollgate did not stop\n%s", log.String())
	}
	if !strings.Contains(log.String(), "exporter stopped") {
		t.Fatalf("no clean exporter shutdown in the log:\n%s", log.String())
	}
}
