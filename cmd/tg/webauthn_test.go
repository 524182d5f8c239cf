package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// TestWebAuthnTG registers a security key with tg mfa add --type=webauthn
// and logs in with it through tg login: tg prints the proxy's page
// (--browser=none), headless Chromium with a virtual authenticator opens
// it, the key answers there, and the browser hands the outcome back to tg
// on its loopback listener. The role that requires a second factor comes
// with the key; the page opened again is refused, and so is a browser
// whose key is not the user's.
func TestWebAuthnTG(t *testing.T) {
	e := startE2EAt(t, "localhost")
	role := filepath.Join(t.TempDir(), "dba.yaml")
	if err := os.WriteFile(role, []byte("kind: role\nmetadata: {name: dba}\nspec:\n  options: {require_mfa: true, require_session_mfa: true}\n  allow: {db_labels: {'*': '*'}, db_users: ['*'], db_names: ['*']}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.run(false, "", e.tgl, "roles", "create", "-f", role)
	out, _ := e.run(false, "", e.tgl, "users", "add", "alice", "--roles=access,dba")
	m := regexp.MustCompile(`(?m)^\s*tg login (--proxy=\S+ --user=alice --invite=\S+ --ca-pin=\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no login command in %s", out)
	}
	e.extraEnv = []string{"TG_PASSWORD=" + password}
	out, errOut := e.run(false, "", e.tg, append([]string{"login"}, strings.Fields(m[1])...)...)
	mustContain(t, "first login", out, "logged in as alice (roles access)")
	mustContain(t, "first login", errOut, "roles dba need a second factor")

	ctx := keyBrowser(t)
	out, _, err := e.withBrowser(ctx, "#tg-result", e.tg, "mfa", "add", "--type=webauthn", "--browser=none")
	if err != nil {
		t.Fatalf("tg mfa add --type=webauthn: %v", err)
	}
	mustContain(t, "tg mfa add --type=webauthn", out, "security key key-", "registered")
	ls, _ := e.run(false, "", e.tg, "mfa", "ls")
	if !regexp.MustCompile(`(?m)^key-[0-9a-f]{12}\s+webauthn$`).MatchString(ls) {
		t.Fatalf("tg mfa ls:\n%s", ls)
	}

	// The password alone no longer logs in: the key finishes it in the
	// browser, and the certificate carries the role that needs it.
	out, _, err = e.withBrowser(ctx, "#tg-result", e.tg, "login", "--browser=none")
	if err != nil {
		t.Fatalf("tg login with the key: %v", err)
	}
	mustContain(t, "tg login with the key", out, "logged in as alice (roles access,dba)")
	page := e.lastURL
	logins, _ := e.loginEvents(t, events.LoginPassword, password)
	last := logins[len(logins)-1]
	if last["success"] != true || last["mfa"] != events.MFAWebAuthn || last["user"] != "alice" {
		t.Fatalf("the key login's event: %v", last)
	}

	// The page of a finished login cannot be used again.
	ssoStep(t, ctx, "the used page again", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("#refused")))
	if got := evalText(t, ctx, "#refused"); !strings.Contains(got, "unknown, expired or already used") {
		t.Fatalf("used page: %q", got)
	}

	// The key is a passkey too: it alone signs in, naming its user.
	out, _, err = e.withBrowser(ctx, "#tg-result", e.tg, "login", "--passkey", "--browser=none")
	if err != nil {
		t.Fatalf("tg login --passkey: %v", err)
	}
	mustContain(t, "tg login --passkey", out, "logged in as alice (roles access,dba)")
	if pk, _ := e.loginEvents(t, events.LoginPasskey, password); len(pk) != 1 || pk[0]["success"] != true || pk[0]["user"] != "alice" || pk[0]["mfa"] != events.MFAWebAuthn {
		t.Fatalf("passkey user.login events: %v", pk)
	}

	// dba needs a second factor for each database session: tg db login
	// gets a certificate for this one after the key answers.
	if _, err := e.b.Store.RegisterDatabase(context.Background(), daemon.Actor, state.NewDatabase{Name: "pg-key", Protocol: "postgres",
		URI: "127.0.0.1:5432", HostID: "agent-1", AgentAddr: "127.0.0.1:5433"}); err != nil {
		t.Fatal(err)
	}
	out, _, err = e.withBrowser(ctx, "#tg-result", e.tg, "db", "login", "pg-key", "--db-user=app", "--browser=none")
	if err != nil {
		t.Fatalf("tg db login with the key: %v", err)
	}
	mustContain(t, "tg db login with the key", out, "issued after a second factor for one session as app")
	sf, err := identity.LoadFile(filepath.Join(e.home, ".tg", "session-pg-key"))
	if err != nil {
		t.Fatal(err)
	}
	if m := sf.Identity.MFASession; m == nil || m.Database != "pg-key" || m.DBUser != "app" || m.Method != events.MFAWebAuthn ||
		time.Until(sf.Cert.Leaf.NotAfter) > time.Minute {
		t.Fatalf("the session certificate: %+v until %s", m, sf.Cert.Leaf.NotAfter)
	}

	// Removing the key needs the key.
	name := regexp.MustCompile(`key-[0-9a-f]{12}`).FindString(ls)
	out, _, err = e.withBrowser(ctx, "#tg-result", e.tg, "mfa", "rm", name, "--browser=none")
	if err != nil {
		t.Fatalf("tg mfa rm with the key: %v", err)
	}
	mustContain(t, "tg mfa rm", out, "second factor "+name+" removed")
	ls, _ = e.run(false, "", e.tg, "mfa", "ls")
	mustContain(t, "tg mfa ls after rm", ls, "no second factor enrolled")
	_, errOut = e.run(true, "", e.tg, "mfa", "rm", name, "--otp=123456")
	mustContain(t, "tg mfa rm again", errOut, "no second factor "+`"`+name+`"`)

	// A key registered again for the last check below.
	if _, _, err := e.withBrowser(ctx, "#tg-result", e.tg, "mfa", "add", "--type=webauthn", "--browser=none"); err != nil {
		t.Fatalf("tg mfa add again: %v", err)
	}

	// A browser whose key is not alice's cannot finish her login: its key
	// has nothing to answer with, and an answer made up instead is
	// refused; tg says so, and the refusal is audited.
	other := keyBrowser(t)
	forge := []chromedp.Action[chromedp.Void]{chromedp.WaitVisible(chromedp.CSS("#webauthn-error")),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("credential").value = JSON.stringify({id: "AAAA", rawId: "AAAA", type: "public-key", response: {authenticatorData: "AAAA", clientDataJSON: "e30", signature: "AAAA"}}); document.getElementById("webauthn-login").submit()`)}
	_, errOut, err = e.withBrowserDo(other, forge, "#tg-result", e.tg, "login", "--browser=none")
	if err == nil {
		t.Fatal("tg login finished with another key")
	}
	mustContain(t, "tg login with another key", errOut, "security key's answer was not accepted")
	logins, _ = e.loginEvents(t, events.LoginPassword, password)
	if last := logins[len(logins)-1]; last["success"] == true || last["reason"] != events.LoginMFAWrong {
		t.Fatalf("the other key's event: %v", last)
	}
	// Nor a passkey sign-in: the made-up answer names no user.
	_, errOut, err = e.withBrowserDo(other, forge, "#tg-result", e.tg, "login", "--passkey", "--browser=none")
	if err == nil {
		t.Fatal("tg login --passkey finished with a made-up answer")
	}
	mustContain(t, "tg login --passkey, made up", errOut, "passkey's answer was not accepted")
	if pk, _ := e.loginEvents(t, events.LoginPasskey, password); len(pk) != 2 || pk[1]["success"] == true || pk[1]["reason"] != events.LoginMFAWrong {
		t.Fatalf("passkey user.login events: %v", pk)
	}
}

// keyBrowser is headless Chromium with a virtual authenticator that
// answers without a touch, and that signs with a key of its own.
func keyBrowser(t *testing.T) context.Context {
	t.Helper()
	ctx := ssoBrowser(t)
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Transport: webauthn.AuthenticatorTransportUsb,
		HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true}}); err != nil {
		t.Fatal(err)
	}
	return ctx
}

func evalText(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withBrowser runs a binary that prints a URL to open, opens it in the
// browser, waits there for sel, and returns the binary's stdout, stderr
// and exit error. e.lastURL keeps the URL.
func (e *e2e) withBrowser(ctx context.Context, sel string, bin string, args ...string) (string, string, error) {
	return e.withBrowserDo(ctx, nil, sel, bin, args...)
}

// withBrowserDo is withBrowser that runs do on the page before waiting
// for sel.
func (e *e2e) withBrowserDo(ctx context.Context, do []chromedp.Action[chromedp.Void], sel string, bin string, args ...string) (string, string, error) {
	t := e.t
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"HOME=" + e.home, "PATH=" + os.Getenv("PATH")}, e.extraEnv...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	urls := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			stderr.WriteString(sc.Text() + "\n")
			if u := regexp.MustCompile(`https://\S+`).FindString(sc.Text()); u != "" {
				select {
				case urls <- u:
				default:
				}
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	select {
	case u := <-urls:
		e.lastURL = u
	case err := <-done:
		<-scanned
		return stdout.String(), stderr.String(), err
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("%s printed no URL: %s", filepath.Base(bin), stderr.String())
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err := chromedp.Do(sctx, append(append([]chromedp.Action[chromedp.Void]{chromedp.Navigate(e.lastURL)}, do...), chromedp.WaitVisible(chromedp.CSS(sel)))...)
	cancel()
	if err != nil {
		dctx, c := context.WithTimeout(ctx, 5*time.Second)
		loc, _ := chromedp.Run(dctx, chromedp.Location())
		body, _ := chromedp.Run(dctx, chromedp.Text(chromedp.CSS("body")))
		c()
		_ = cmd.Process.Kill()
		t.Fatalf("open the URL %s printed: %v\nthe browser is at %s showing %q\n%s said: %s", filepath.Base(bin), err, loc, body, filepath.Base(bin), stderr.String())
	}
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("%s did not finish after the browser: %s", filepath.Base(bin), stderr.String())
	}
	<-scanned
	return stdout.String(), stderr.String(), err
}
