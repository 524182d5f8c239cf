package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
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

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// TestStartServesStreamsAndStopsCleanly runs the real binary: it must log
// where NATS listens, serve the streams there, and exit 0 on SIGINT.
func TestStartServesStreamsAndStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "tollgate")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfgFile := filepath.Join(dir, "tollgate.yaml")
	err := os.WriteFile(cfgFile, []byte("cluster_name: ci\nnats:\n  embedded:\n    listen: 127.0.0.1:0\n"+
		"proxy:\n  listen: 127.0.0.1:0\ndb_service:\n  listen: 127.0.0.1:0\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")

	healthAddr := freeAddr(t)
	cmd := exec.Command(bin, "start", "--config", cfgFile, "--data-dir", dataDir, "--health-listen="+healthAddr)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	}()

	var log strings.Builder
	urlRE := regexp.MustCompile(`client_url=(tls://127\.0\.0\.1:\d+)`)
	var url string
	timeout := time.After(60 * time.Second)
	for url == "" || !strings.Contains(log.String(), "tollgate started") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("tollgate exited early: %v\n%s", <-exited, log.String())
			}
			log.WriteString(l + "\n")
			if m := urlRE.FindStringSubmatch(l); m != nil {
				url = m[1]
			}
		case <-timeout:
			t.Fatalf("no client_url and start line within 60s:\n%s", log.String())
		}
	}
	if !strings.Contains(log.String(), "streams ready") {
		t.Fatalf("streams not logged:\n%s", log.String())
	}
	// The probes an orchestrator uses: alive at once, and ready once the
	// broker serves, with a sound AUDIT stream.
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + healthAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if c, b := get("/healthz"); c != http.StatusOK {
		t.Fatalf("/healthz: %d %s", c, b)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, b := get("/readyz")
		if c == http.StatusOK {
			break
		}
		if c != http.StatusServiceUnavailable || !strings.HasPrefix(b, "starting") || time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %s", c, b)
		}
	}

	// Anonymous connections are refused; the auditor's identity made in
	// the data dir reads, over TLS pinned to the listener's certificate.
	authDir := filepath.Join(dataDir, "nats-auth")
	if nc, err := nats.Connect(url, nats.RootCAs(filepath.Join(authDir, natsserver.TLSCertFile))); err == nil {
		nc.Close()
		t.Fatal("anonymous connection accepted")
	}
	creds, err := natsserver.LoadCredentials(authDir)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := creds.Options(natsserver.Auditor)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, append(opts, nats.RootCAs(filepath.Join(authDir, natsserver.TLSCertFile)))...)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range []string{events.AuditStream, events.StateStream} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if c := s.CachedInfo().Config; c.Storage != jetstream.FileStorage || !c.DenyDelete || !c.DenyPurge {
			t.Fatalf("stream %s: storage %v, deny_delete %v, deny_purge %v", name, c.Storage, c.DenyDelete, c.DenyPurge)
		}
	}
	if _, err := js.ObjectStore(ctx, events.LargeFieldsBucket); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "nats", "jetstream")); err != nil {
		t.Fatalf("JetStream store not under --data-dir: %v", err)
	}
	nc.Close()

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() { // keep reading so the process never blocks on a full pipe
		for l := range lines {
			log.WriteString(l + "\n")
		}
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGINT: %v\n%s", err, log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("still running 30s after SIGINT")
	}
}

func TestStartConfigDataDir(t *testing.T) {
	cfg, err := startConfig("", "/srv/tg")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/srv/tg" || cfg.NATS.Embedded.StoreDir != "/srv/tg/nats" {
		t.Fatalf("data dir %q store dir %q", cfg.DataDir, cfg.NATS.Embedded.StoreDir)
	}
	f := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(f, []byte("nats:\n  embedded:\n    store_dir: /elsewhere\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err = startConfig(f, "/srv/tg"); err != nil || cfg.NATS.Embedded.StoreDir != "/elsewhere" {
		t.Fatalf("an explicit store dir must stay: %v %+v", err, cfg)
	}
	if _, err := newLogger(config.Log{Level: "loud"}, io.Discard); err == nil || !strings.Contains(err.Error(), `"loud"`) {
		t.Fatalf("bad level: %v", err)
	}
}

// With nats.urls set, start connects to that server instead of embedding
// one, creates the streams there, runs the roles and stops when asked; a
// failing role stops the others and is the error.
func TestRunStartExternalNATSAndRoles(t *testing.T) {
	ext, err := natsserver.Start(natsserver.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Shutdown()

	saved := startRoles
	defer func() { startRoles = saved }()
	started := make(chan *startDeps, 1)
	stopped := make(chan struct{})
	startRoles = []startRole{
		{Name: "watcher", Run: func(ctx context.Context, d *startDeps) error {
			started <- d
			<-ctx.Done()
			close(stopped)
			return nil
		}},
		{Name: "disabled", Enabled: func(*config.Config) bool { return false }, Run: func(context.Context, *startDeps) error {
			return errors.New("a disabled role ran")
		}},
	}

	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.NATS.URLs = []string{ext.ClientURL()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runStart(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()

	var d *startDeps
	select {
	case d = <-started:
	case err := <-done:
		t.Fatalf("start ended early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("role not started within 30s")
	}
	if d.NATS != nil || d.Publisher == nil || d.shared == nil {
		t.Fatalf("deps %+v", d)
	}
	if err := d.Publisher.Publish(ctx, &events.Query{Session: events.Session{SID: "s"}, Query: "select 1"}); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ext.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, events.AuditStream)
	if err != nil || st.CachedInfo().State.Msgs != 1 {
		t.Fatalf("AUDIT on the external server: %v %+v", err, st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-stopped

	// A role that fails ends start with its error, after the others stopped.
	startRoles = []startRole{
		{Name: "watcher", Run: func(ctx context.Context, _ *startDeps) error { <-ctx.Done(); return nil }},
		{Name: "broken", Run: func(context.Context, *startDeps) error { return errors.New("cannot bind") }},
	}
	err = runStart(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "broken: cannot bind") {
		t.Fatalf("want the broken role's error, got %v", err)
	}
}

// An external server configured with the authorization `tollgate auth
// nats` prints: with nats.credentials_dir each role connects with its own
// seed and is held to its own job, and a process without the broker waits
// for the broker's streams instead of making them.
func TestRunStartExternalNATSWithCredentialsDir(t *testing.T) {
	dir := t.TempDir()
	creds, err := natsserver.LoadOrCreateCredentials(filepath.Join(dir, "nats-auth"))
	if err != nil {
		t.Fatal(err)
	}
	ext, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(dir, "ext"), Listen: "127.0.0.1:0", Auth: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Shutdown()
	bnc, err := ext.ConnectAs(natsserver.Broker)
	if err != nil {
		t.Fatal(err)
	}
	bjs, _ := jetstream.New(bnc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := events.EnsureStreams(ctx, bjs, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}

	saved := startRoles
	defer func() { startRoles = saved }()
	started := make(chan *startDeps, 1)
	startRoles = []startRole{{Name: "agent", Run: func(ctx context.Context, d *startDeps) error {
		started <- d
		<-ctx.Done()
		return nil
	}}}
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.NATS.URLs = []string{ext.ClientURL()}
	cfg.NATS.CredentialsDir = creds.Dir
	done := make(chan error, 1)
	go func() { done <- runStart(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	var d *startDeps
	select {
	case d = <-started:
	case err := <-done:
		t.Fatalf("start ended early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("role not started within 30s")
	}
	if err := d.Publisher.Publish(ctx, &events.Query{Session: events.Session{SID: "s"}, Query: "select 1"}); err != nil {
		t.Fatalf("the agent's publisher: %v", err)
	}
	// The agent's connection may not append STATE.
	errs := make(chan error, 1)
	nc, js, err := d.As(natsserver.Agent)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	defer pcancel()
	if _, err := js.Publish(pctx, "state.user.mallory", []byte("{}")); err == nil {
		t.Fatal("the agent's identity appended STATE")
	}
	select {
	case e := <-errs:
		if !errors.Is(e, nats.ErrPermissionViolation) {
			t.Fatalf("server said %v, want a permissions violation", e)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no permissions violation reported")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
