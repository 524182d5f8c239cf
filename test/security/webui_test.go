package security

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/test/faults"
)

// In `tollgate start` with PostgreSQL behind its agent, an editor signs
// in to the web UI in headless Chromium, finds a statement a live session
// ran a moment earlier by its text, opens the session's replay, and ends
// the session from its page: the user's open connection is refused its
// next statement, with the editor's message. A lock on the user, placed
// on the locks page, then ends the user's next session.
func TestWebUIEndsALiveSession(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is needed to test the web UI (apt-get install chromium, or .ci/install-deps): %v", err)
	}
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// alice is an editor with a password, set with her invite as a first
	// tg login does; bob has a certificate and an open session.
	out, err := w.tollgate("users", "add", "alice", "--roles=editor")
	if err != nil {
		t.Fatalf("users add: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`--invite=(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no invite in %q", out)
	}
	const alicePW = "a long password for the web UI"
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.apiClient(nil).Login(ctx, api.LoginRequest{User: "alice", Password: alicePW, Invite: m[1],
		PublicKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}); err != nil {
		t.Fatalf("alice's first login: %v", err)
	}
	if out, err := w.tollgate("users", "add", "bob", "--roles=access", "--db-users="+faults.DBUser, "--db-names=postgres"); err != nil {
		t.Fatalf("users add: %v\n%s", err, out)
	}
	_, bobCert, bobKey := faults.UserFiles(t, w.cas, w.dir, "bob")
	cfg, err := faults.PgxConfig(w.agentAddr, w.hostCA, bobCert, bobKey)
	if err != nil {
		t.Fatal(err)
	}
	live, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close(context.Background())
	if _, err := live.Exec(ctx, "SELECT 'webui_marker_31337'"); err != nil {
		t.Fatal(err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.IgnoreCertErrors, chromedp.WindowSize(1280, 900))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, c := context.WithTimeout(bctx, 30*time.Second)
		defer c()
		if _, err := chromedp.RunResponse(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		sctx, c := context.WithTimeout(bctx, 30*time.Second)
		defer c()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	base := "https://" + w.proxyAddr
	do("open the UI", chromedp.Navigate(base+"/"))
	do("sign in", chromedp.SendKeys(chromedp.CSS("#user"), "alice"), chromedp.SendKeys(chromedp.CSS("#password"), alicePW),
		chromedp.Click(chromedp.CSS("#signin")))
	do("Audit link", chromedp.Click(`//nav//a[normalize-space()="Audit"]`))
	do("search", chromedp.SendKeys(chromedp.CSS("#q"), "webui_marker_31337"), chromedp.Click(chromedp.CSS("#search")))
	if got := text("#events tbody"); !strings.Contains(got, "SELECT 'webui_marker_31337'") || !strings.Contains(got, "bob") {
		t.Fatalf("the statement on the audit page: %q", got)
	}
	do("open its session", chromedp.Click(chromedp.CSS("a.sid")))
	if got := text("#timeline"); !strings.Contains(got, "SELECT 'webui_marker_31337'") || !strings.Contains(got, "SELECT 1 (1 rows)") {
		t.Fatalf("replay: %q", got)
	}
	do("end the session", chromedp.SendKeys(chromedp.CSS("#end-message"), "ended from the web UI"),
		chromedp.Click(chromedp.CSS("#end-session")))
	if got := text("#notice"); !strings.Contains(got, "lock on this session") {
		t.Fatalf("after ending: %q", got)
	}
	after, err := waitRefused(t, "bob's session after the editor ended it", func() error {
		_, err := live.Exec(ctx, "SELECT 'webui after the end'")
		return err
	})
	t.Logf("session refused %v after the lock: %v", after, err)
	if !strings.Contains(err.Error(), "ended from the web UI") {
		t.Fatalf("the refusal does not carry the editor's message: %v", err)
	}
	if w.logged("webui after the end") {
		t.Fatal("a statement of the ended session reached PostgreSQL")
	}

	// A lock on the user from the locks page ends bob's next session too.
	again, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close(context.Background())
	do("Locks link", chromedp.Click(`//nav//a[normalize-space()="Locks"]`))
	do("lock bob", chromedp.SendKeys(chromedp.CSS("#lock-user"), "bob"),
		chromedp.SendKeys(chromedp.CSS("#lock-message"), "bob is locked from the web UI"),
		chromedp.Click(chromedp.CSS("#lock")))
	if got := text("#locks tbody"); !strings.Contains(got, "user bob") || !strings.Contains(got, "by alice") {
		t.Fatalf("locks page: %q", got)
	}
	after, err = waitRefused(t, "bob's session after the user lock", func() error {
		_, err := again.Exec(ctx, "SELECT 'webui after the user lock'")
		return err
	})
	t.Logf("user lock: session refused %v later: %v", after, err)
	if !strings.Contains(err.Error(), "bob is locked from the web UI") || w.logged("webui after the user lock") {
		t.Fatalf("after the user lock: %v", err)
	}
}
