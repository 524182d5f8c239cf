package webui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/sso"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/test/oidcop"
	"github.com/tollgate-db/tollgate/test/samlidp"
	"github.com/tollgate-db/tollgate/webui"
)

// ssoLogin is a user.login event as the single sign-on tests read it.
type ssoLogin struct {
	User      string   `json:"user"`
	Roles     []string `json:"roles"`
	Success   bool     `json:"success"`
	Method    string   `json:"method"`
	Connector string   `json:"connector"`
	Reason    string   `json:"reason"`
	Error     string   `json:"error"`
}

func ssoLogins(t *testing.T, w *world) []ssoLogin {
	t.Helper()
	pg, err := webui.SearchAudit(ctxT(t), w.js, webui.Search{TypePrefix: "user.login"}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []ssoLogin
	for _, r := range pg.Rows {
		var ev ssoLogin
		if err := json.Unmarshal(r.Raw, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Method == events.LoginOIDC {
			out = append(out, ev)
		}
	}
	return out
}

// TestSSOSignIn signs in to the web UI through a real OpenID Provider's
// login page in headless Chromium: the sign-in page offers the connector,
// the provider's groups claim maps to the editor role, and a user whose
// claims map to no role is refused with a page and an event that say so.
func TestSSOSignIn(t *testing.T) {
	w := startWorld(t)
	base := "https://" + w.ProxyAddr
	idp := oidcop.Start(t, "tollgate", "client-secret-42", []string{base + sso.CallbackPath("corp")},
		oidcop.User{Username: "alice", Password: "alice-at-the-idp", Email: "alice@example.com", Groups: []string{"dba", "staff"}},
		oidcop.User{Username: "mallory", Password: "mallory-at-the-idp", Email: "mallory@example.com", Groups: []string{"contractors"}})
	res, err := w.Admin.As(admin, "").UpsertConnectors(ctxT(t), fmt.Sprintf(`kind: connector
version: v1
metadata: {name: corp}
spec:
  type: oidc
  display: Corp SSO
  issuer_url: %s
  client_id: tollgate
  client_secret: client-secret-42
  scopes: [email, profile]
  claims_to_roles:
    - {claim: groups, value: dba, roles: [editor], db_users: [postgres]}
`, idp.Issuer))
	if err != nil || len(res) != 1 || res[0].Result != "created" {
		t.Fatalf("add connector: %v %+v", err, res)
	}

	ctx := browser(t)
	step(t, ctx, "sign-in page", chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#sso-corp")))
	if got := text(t, ctx, "#sso-corp"); got != "Corp SSO" {
		t.Fatalf("connector button: %q", got)
	}
	idpLogin(t, ctx, "alice", "alice-at-the-idp", chromedp.Click(chromedp.CSS("#sso-corp")))
	// Signed in as an editor, the UI lands on the audit trail.
	step(t, ctx, "signed in", chromedp.WaitVisible(chromedp.CSS("form.signout")))
	if loc := location(t, ctx); !strings.HasPrefix(loc, "/audit") {
		t.Fatalf("after single sign-on at %s: %q", loc, text(t, ctx, "main"))
	}
	if u := text(t, ctx, "header"); !strings.Contains(u, "alice@example.com") {
		t.Fatalf("header does not name the user: %q", u)
	}
	evs := ssoLogins(t, w)
	if len(evs) != 1 || !evs[0].Success || evs[0].User != "alice@example.com" || evs[0].Connector != "corp" || strings.Join(evs[0].Roles, ",") != "editor" {
		t.Fatalf("user.login events: %+v", evs)
	}

	// Another browser, a user whose groups grant nothing.
	ctx2 := browser(t)
	step(t, ctx2, "sign-in page", chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#sso-corp")))
	idpLogin(t, ctx2, "mallory", "mallory-at-the-idp", chromedp.Click(chromedp.CSS("#sso-corp")))
	step(t, ctx2, "refused", chromedp.WaitVisible(chromedp.CSS("#error")))
	if msg := text(t, ctx2, "#error"); !strings.Contains(msg, "mallory@example.com has no role") || !strings.Contains(msg, "groups=contractors") {
		t.Fatalf("refusal page: %q", msg)
	}
	if n := eval[int](t, ctx2, `document.querySelectorAll('form.signout').length`); n != 0 {
		t.Fatal("a user mapped to no role was signed in")
	}
	evs = ssoLogins(t, w)
	if len(evs) != 2 || evs[0].Success || evs[0].Reason != events.LoginSSONoRole || evs[0].User != "mallory@example.com" {
		t.Fatalf("user.login events (newest first): %+v", evs)
	}
}

// idpLogin runs start (which leads the browser to the provider) and fills
// in the provider's own login page.
func idpLogin(t *testing.T, ctx context.Context, user, pw string, start chromedp.Action[chromedp.Void]) {
	t.Helper()
	step(t, ctx, "to the identity provider", start, chromedp.WaitVisible(chromedp.CSS("#username")))
	step(t, ctx, "identity provider login",
		chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), pw),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)))
}

// TestTOTPSignIn: once alice enrolled an authenticator, the sign-in form
// needs its code besides the password; without it the page says so.
func TestTOTPSignIn(t *testing.T) {
	w := startWorld(t)
	base := "https://" + w.ProxyAddr
	w.addUser(t, "alice", alicePW, access.RoleAccess)
	id := identity.Identity{User: "alice", Roles: []string{access.RoleAccess}}
	secret, _, err := w.Login.BeginTOTP(id)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	code, _ := totp.GenerateCode(secret, now)
	if err := w.Login.ConfirmTOTP(ctxT(t), id, code); err != nil {
		t.Fatal(err)
	}
	ctx := browser(t)
	step(t, ctx, "sign-in page", chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#signin")))
	status := submit(t, ctx, "password alone",
		chromedp.SendKeys(chromedp.CSS("#user"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), alicePW),
		chromedp.Click(chromedp.CSS("#signin")))
	if status != 403 || !strings.Contains(text(t, ctx, "#error"), "one-time code") {
		t.Fatalf("password alone: status %d, page %q", status, text(t, ctx, "main"))
	}
	next, _ := totp.GenerateCode(secret, now.Add(30*time.Second))
	status = submit(t, ctx, "password and code",
		chromedp.SendKeys(chromedp.CSS("#password"), alicePW),
		chromedp.SendKeys(chromedp.CSS("#otp"), next),
		chromedp.Click(chromedp.CSS("#signin")))
	if status != 200 || eval[int](t, ctx, `document.querySelectorAll('form.signout').length`) != 1 {
		t.Fatalf("password and code: status %d, page %q", status, text(t, ctx, "main"))
	}
}

// TestSAMLSignIn signs in to the web UI through a real SAML identity
// provider (crewjam/saml's samlidp), its metadata given inline, in
// headless Chromium: its login form,
// its signed response posted back to the ACS, the groups attribute mapped
// to the editor role; a user whose attributes map to no role is refused
// with a page and an event that say so.
func TestSAMLSignIn(t *testing.T) {
	w := startWorld(t)
	base := "https://" + w.ProxyAddr
	idp := samlidp.Start(t, []samlidp.SP{{EntityID: base + sso.SAMLMetadataPath("ent"), ACS: base + sso.SAMLACSPath("ent")}},
		samlidp.User{Username: "alice", Password: "alice-at-the-idp", Email: "alice@example.com", Groups: []string{"dba", "staff"}},
		samlidp.User{Username: "mallory", Password: "mallory-at-the-idp", Email: "mallory@example.com", Groups: []string{"contractors"}})
	res, err := w.Admin.As(admin, "").UpsertConnectors(ctxT(t), fmt.Sprintf(`kind: connector
metadata: {name: ent}
spec:
  type: saml
  display: Enterprise SAML
  entity_descriptor: |
    %s
  attributes_to_roles:
    - {name: %s, value: dba, roles: [editor], db_users: [postgres]}
`, strings.ReplaceAll(string(idp.Metadata), "\n", "\n    "), samlidp.GroupsAttribute))
	if err != nil || len(res) != 1 || res[0].Result != "created" {
		t.Fatalf("add connector: %v %+v", err, res)
	}
	samlLogins := func() []ssoLogin {
		var out []ssoLogin
		pg, err := webui.SearchAudit(ctxT(t), w.js, webui.Search{TypePrefix: "user.login"}, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range pg.Rows {
			var ev ssoLogin
			if json.Unmarshal(r.Raw, &ev) == nil && ev.Method == events.LoginSAML {
				out = append(out, ev)
			}
		}
		return out
	}

	ctx := browser(t)
	step(t, ctx, "sign-in page", chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#sso-ent")))
	if got := text(t, ctx, "#sso-ent"); got != "Enterprise SAML" {
		t.Fatalf("connector button: %q", got)
	}
	samlIdPLogin(t, ctx, "alice", "alice-at-the-idp", chromedp.Click(chromedp.CSS("#sso-ent")))
	step(t, ctx, "signed in", chromedp.WaitVisible(chromedp.CSS("form.signout")))
	if loc := location(t, ctx); !strings.HasPrefix(loc, "/audit") {
		t.Fatalf("after single sign-on at %s: %q", loc, text(t, ctx, "main"))
	}
	if u := text(t, ctx, "header"); !strings.Contains(u, "alice@example.com") {
		t.Fatalf("header does not name the user: %q", u)
	}
	evs := samlLogins()
	if len(evs) != 1 || !evs[0].Success || evs[0].User != "alice@example.com" || evs[0].Connector != "ent" || strings.Join(evs[0].Roles, ",") != "editor" {
		t.Fatalf("user.login events: %+v", evs)
	}

	ctx2 := browser(t)
	step(t, ctx2, "sign-in page", chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#sso-ent")))
	samlIdPLogin(t, ctx2, "mallory", "mallory-at-the-idp", chromedp.Click(chromedp.CSS("#sso-ent")))
	step(t, ctx2, "refused", chromedp.WaitVisible(chromedp.CSS("#error")))
	if msg := text(t, ctx2, "#error"); !strings.Contains(msg, "mallory@example.com has no role") || !strings.Contains(msg, samlidp.GroupsAttribute+"=contractors") {
		t.Fatalf("refusal page: %q", msg)
	}
	if n := eval[int](t, ctx2, `document.querySelectorAll('form.signout').length`); n != 0 {
		t.Fatal("a user mapped to no role was signed in")
	}
	evs = samlLogins()
	if len(evs) != 2 || evs[0].Success || evs[0].Reason != events.LoginSSONoRole || evs[0].User != "mallory@example.com" {
		t.Fatalf("user.login events (newest first): %+v", evs)
	}
}

// samlIdPLogin runs start (which leads the browser to the identity
// provider) and fills in samlidp's login form.
func samlIdPLogin(t *testing.T, ctx context.Context, user, pw string, start chromedp.Action[chromedp.Void]) {
	t.Helper()
	step(t, ctx, "to the identity provider", start, chromedp.WaitVisible(chromedp.CSS(`input[name=user]`)))
	step(t, ctx, "identity provider login",
		chromedp.SendKeys(chromedp.CSS(`input[name=user]`), user),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), pw),
		chromedp.Click(chromedp.CSS(`input[type=submit]`)))
}
