package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tollgate-db/tollgate/broker/sso"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/schemas"
	"github.com/tollgate-db/tollgate/test/oidcop"
)

const (
	ssoClientSecret = "the-client-secret-of-tollgate"
	idpPassword     = "alice-password-at-the-idp"
)

// TestSSOLogin runs `tg login --auth` against a real OpenID Provider:
// tollgate sso add/ls/rm through the binaries, tg printing the URL
// (--browser=none), headless Chromium opening it and signing in on the
// provider's page, and tg receiving the certificate on its loopback
// callback. The roles and traits come from the mapped claims; a user
// mapped to no role and a removed connector are refused with messages
// that say so; the events name the connector, and neither the client
// secret nor the provider password is in any stream.
func TestSSOLogin(t *testing.T) {
	e := startE2E(t)
	idp := oidcop.Start(t, "tollgate", ssoClientSecret, []string{"https://" + e.proxy + sso.CallbackPath("corp")},
		oidcop.User{Username: "alice", Password: idpPassword, Email: "alice@example.com", Groups: []string{"dba"}},
		oidcop.User{Username: "eve", Password: idpPassword, Email: "eve@example.com", Groups: []string{"guests"}})
	file := filepath.Join(t.TempDir(), "corp.yaml")
	if err := os.WriteFile(file, fmt.Appendf(nil, `kind: connector
version: v1
metadata: {name: corp}
spec:
  type: oidc
  issuer_url: %s
  client_id: tollgate
  client_secret: %s
  scopes: [email, profile]
  claims_to_roles:
    - {claim: groups, value: "db*", roles: [access], db_users: [app_ro], db_names: [shop]}
`, idp.Issuer, ssoClientSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := e.run(false, "", e.tgl, "sso", "add", "-f", file)
	mustContain(t, "sso add", out, "connector corp created")
	out, _ = e.run(false, "", e.tgl, "sso", "add", "-f", file)
	mustContain(t, "sso add again", out, "connector corp unchanged")
	out, _ = e.run(false, "", e.tgl, "sso", "ls")
	mustContain(t, "sso ls", out, "corp", idp.Issuer, "groups=db*→access")
	if strings.Contains(out, ssoClientSecret) {
		t.Fatalf("sso ls shows the client secret:\n%s", out)
	}
	// A mapping to a role that does not exist is refused, naming it.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, bytes.ReplaceAll(must(os.ReadFile(file)), []byte("roles: [access]"), []byte("roles: [acess]")), 0o600)
	_, errOut := e.run(true, "", e.tgl, "sso", "add", "-f", bad)
	mustContain(t, "sso add with an unknown role", errOut, "unknown role acess")

	ctx := ssoBrowser(t)
	out = e.ssoLogin(ctx, "alice", false)
	mustContain(t, "tg login --auth", out, "logged in as alice@example.com (roles access)")
	st, _ := e.run(false, "", e.tg, "status")
	mustContain(t, "tg status", st, "alice@example.com", "app_ro", "shop")

	errOut = e.ssoLogin(ssoBrowser(t), "eve", true)
	mustContain(t, "tg login --auth as eve", errOut, "refused", "eve@example.com has no role", "groups=guests")

	out, _ = e.run(false, "", e.tgl, "sso", "rm", "corp")
	mustContain(t, "sso rm", out, "connector corp removed")
	_, errOut = e.run(true, "", e.tg, "login", "--proxy="+e.proxy, "--auth=corp", "--browser=none")
	mustContain(t, "tg login with a removed connector", errOut, `no single sign-on connector "corp"`)

	logins, admin := e.ssoEvents(t)
	if len(logins) != 2 || logins[0]["success"] != true || logins[0]["user"] != "alice@example.com" || logins[0]["connector"] != "corp" ||
		logins[1]["success"] == true || logins[1]["reason"] != events.LoginSSONoRole {
		t.Fatalf("oidc user.login events: %v", logins)
	}
	if strings.Join(admin, " ") != "connector.create connector.delete" {
		t.Fatalf("connector events: %v", admin)
	}
}

// ssoLogin runs tg login --auth=corp and signs in at the OpenID
// Provider's page as user.
func (e *e2e) ssoLogin(ctx context.Context, user string, wantErr bool) string {
	e.t.Helper()
	return e.authLogin(ctx, "corp", wantErr,
		chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), idpPassword),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)))
}

// authLogin runs tg login --auth=connector --browser=none, opens the URL
// it prints in the browser and runs signIn at the provider's page; it
// returns tg's stdout, or its stderr when it must fail.
func (e *e2e) authLogin(ctx context.Context, connector string, wantErr bool, signIn ...chromedp.Action[chromedp.Void]) string {
	t := e.t
	t.Helper()
	cmd := exec.Command(e.tg, "login", "--proxy="+e.proxy, "--auth="+connector, "--browser=none", "--insecure")
	cmd.Env = []string{"HOME=" + e.home, "PATH=" + os.Getenv("PATH")}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	urls := make(chan string, 1)
	go func() {
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
	var u string
	select {
	case u = <-urls:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("tg printed no URL: %s", stderr.String())
	}
	ssoStep(t, ctx, "open the URL tg printed", chromedp.Navigate(u))
	ssoStep(t, ctx, "identity provider login", append(signIn, chromedp.WaitVisible(chromedp.CSS("#tg-result")))...)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("tg did not finish after the sign-in: %s", stderr.String())
	}
	pw.Close()
	page, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#tg-result")))
	if wantErr {
		if err == nil {
			t.Fatalf("tg login --auth=%s succeeded: %s", connector, stdout.String())
		}
		if !strings.Contains(page, "has no role") {
			t.Fatalf("the browser was not told why: %q", page)
		}
		return stderr.String()
	}
	if err != nil {
		t.Fatalf("tg login --auth=%s: %v\n%s", connector, err, stderr.String())
	}
	if !strings.Contains(page, "Signed in") {
		t.Fatalf("the browser page after the login: %q", page)
	}
	return stdout.String()
}

// ssoEvents reads the oidc user.login events of AUDIT and the connector
// events of STATE, each checked against its schema, and fails if either
// stream holds the client secret or the provider password.
func (e *e2e) ssoEvents(t *testing.T) (logins []map[string]any, connectors []string) {
	return e.loginEvents(t, events.LoginOIDC, ssoClientSecret, idpPassword)
}

// loginEvents reads the user.login events of method and the connector
// events, each checked against its schema, and fails if a stream holds
// one of the secrets.
func (e *e2e) loginEvents(t *testing.T, method string, secrets ...string) (logins []map[string]any, connectors []string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{events.AuditStream, events.StateStream} {
		s, err := e.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				continue
			}
			for _, sec := range secrets {
				if bytes.Contains(m.Data, []byte(sec)) {
					t.Errorf("%s %d holds a secret:\n%s", name, seq, m.Data)
				}
			}
			err = events.SplitEvents(m.Data, func(data []byte) error {
				var ev map[string]any
				if err := json.Unmarshal(data, &ev); err != nil {
					return err
				}
				typ, _ := ev["type"].(string)
				switch {
				case name == events.AuditStream && typ == "user.login" && ev["method"] == method:
					logins = append(logins, ev)
				case name == events.StateStream && strings.HasPrefix(typ, "connector."):
					if ev["user"] == "" || ev["user"] == nil {
						t.Errorf("%s without its actor: %s", typ, data)
					}
					connectors = append(connectors, typ)
				default:
					return nil
				}
				if err := schemas.Validate(data); err != nil {
					t.Errorf("%s %d: %v\n%s", name, seq, err, data)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return logins, connectors
}

func ssoBrowser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is needed to drive the identity provider's login page (.ci/install-deps installs it): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.IgnoreCertErrors)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

func ssoStep(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		// Where the browser stopped says which hop of the flow hung.
		dctx, c := context.WithTimeout(ctx, 5*time.Second)
		loc, _ := chromedp.Run(dctx, chromedp.Location())
		body, _ := chromedp.Run(dctx, chromedp.Text(chromedp.CSS("body")))
		c()
		t.Fatalf("%s: %v\nthe browser is at %s showing %q", what, err, loc, body)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
