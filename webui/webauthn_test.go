package webui_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/webui"
)

// TestWebAuthnSignIn registers a security key (Chromium's virtual
// authenticator) on the security keys page, then signs in with password
// and key; a browser without the key, and a forged answer, are refused
// with their user.login events.
func TestWebAuthnSignIn(t *testing.T) {
	w := startWorldAt(t, "localhost")
	base := "https://" + w.ProxyAddr
	// dba requires a second factor: a key login gets it.
	if _, err := w.Admin.As(admin, "").UpsertRoles(ctxT(t), "kind: role\nmetadata: {name: dba}\nspec:\n  options: {require_mfa: true}\n  allow: {db_users: ['*'], db_names: ['*']}\n"); err != nil {
		t.Fatal(err)
	}
	w.addUser(t, "alice", alicePW, access.RoleAccess, "dba")

	ctx := browser(t)
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Transport: webauthn.AuthenticatorTransportUsb,
		HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true}}); err != nil {
		t.Fatal(err)
	}
	// Keep a copy of every answer the page posts, as someone watching
	// the browser could, to replay it below.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `
		const submit = HTMLFormElement.prototype.submit;
		HTMLFormElement.prototype.submit = function () {
			const c = this.querySelector("#credential");
			if (c) { sessionStorage.setItem("captured", c.value); }
			submit.call(this);
		};`}); err != nil {
		t.Fatal(err)
	}
	signIn(t, ctx, base, "alice", alicePW)
	step(t, ctx, "security keys page", chromedp.Navigate(base+"/mfa"), chromedp.WaitVisible(chromedp.CSS("#webauthn-add")),
		chromedp.Click(chromedp.CSS("#webauthn-add")), chromedp.WaitVisible(chromedp.CSS("#webauthn-result")))
	if got := text(t, ctx, "#webauthn-result"); got != "Security key added." {
		t.Fatalf("registration: %q", got)
	}
	if u, _ := w.Store.User("alice"); !u.WebAuthn {
		t.Fatal("the key is not recorded")
	}

	// The password alone no longer signs in; the key finishes it.
	step(t, ctx, "sign out", chromedp.Click(chromedp.CSS("form.signout button")), chromedp.WaitVisible(chromedp.CSS("#signin")))
	step(t, ctx, "password", chromedp.SendKeys(chromedp.CSS("#user"), "alice"), chromedp.SendKeys(chromedp.CSS("#password"), alicePW),
		chromedp.Click(chromedp.CSS("#signin")))
	step(t, ctx, "signed in with the key", chromedp.WaitVisible(chromedp.CSS("form.signout")))
	evs := loginEvents(t, w)
	if len(evs) < 2 || !evs[0].Success || evs[0].MFA != events.MFAWebAuthn || evs[0].User != "alice" ||
		strings.Join(evs[0].Roles, ",") != "access,dba" || len(evs[0].Withheld) != 0 ||
		evs[1].Success || evs[1].Reason != events.LoginMFARequired {
		t.Fatalf("user.login events (newest first): %+v", evs[:min(len(evs), 3)])
	}

	// Another browser knows the password but has no key.
	ctx2 := browser(t)
	step(t, ctx2, "sign-in page", chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#signin")))
	step(t, ctx2, "password", chromedp.SendKeys(chromedp.CSS("#user"), "alice"), chromedp.SendKeys(chromedp.CSS("#password"), alicePW),
		chromedp.Click(chromedp.CSS("#signin")), chromedp.WaitVisible(chromedp.CSS("#webauthn-prompt")))
	if n := eval[int](t, ctx2, `document.querySelectorAll('form.signout').length`); n != 0 {
		t.Fatal("signed in with the password alone")
	}
	// The key's genuine answer to an earlier challenge, replayed to a new
	// one, is refused and audited.
	captured := eval[string](t, ctx, `sessionStorage.getItem("captured") || ""`)
	if !strings.Contains(captured, "authenticatorData") {
		t.Fatalf("no answer captured: %q", captured)
	}
	js, _ := json.Marshal(captured)
	status := submit(t, ctx2, "replayed answer", chromedp.Evaluate[chromedp.Void](`document.getElementById("credential").value = `+string(js)+`; document.getElementById("webauthn-login").submit()`))
	if status != 401 || !strings.Contains(text(t, ctx2, "#error"), "security key's answer was not accepted") {
		t.Fatalf("replayed answer: %d %q", status, text(t, ctx2, "main"))
	}
	if evs := loginEvents(t, w); evs[0].Success || evs[0].Reason != events.LoginMFAWrong || evs[0].User != "alice" || !strings.Contains(evs[0].Error, "hallenge") {
		t.Fatalf("replayed answer's event: %+v", evs[0])
	}
	step(t, ctx2, "password again", chromedp.SendKeys(chromedp.CSS("#user"), "alice"), chromedp.SendKeys(chromedp.CSS("#password"), alicePW),
		chromedp.Click(chromedp.CSS("#signin")), chromedp.WaitVisible(chromedp.CSS("#webauthn-prompt")))
	// An answer made up instead of the key's is refused and audited.
	status = submit(t, ctx2, "forged answer", chromedp.Evaluate[chromedp.Void](`document.getElementById("credential").value = JSON.stringify({id: "AAAA", rawId: "AAAA", type: "public-key", response: {authenticatorData: "AAAA", clientDataJSON: "e30", signature: "AAAA"}}); document.getElementById("webauthn-login").submit()`))
	if status != 401 || !strings.Contains(text(t, ctx2, "#error"), "security key's answer was not accepted") {
		t.Fatalf("forged answer: %d %q", status, text(t, ctx2, "main"))
	}
	if evs := loginEvents(t, w); evs[0].Success || evs[0].Reason != events.LoginMFAWrong || evs[0].User != "alice" {
		t.Fatalf("forged answer's event: %+v", evs[0])
	}

	// The API's password login without a browser to return through is
	// refused too: the key answers only in a browser.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err := w.Login.Login(ctxT(t), login.Request{User: "alice", Password: alicePW, PublicKey: k.Public()})
	var ref *login.Refusal
	if !errors.As(err, &ref) || ref.Reason != events.LoginMFARequired || !strings.Contains(ref.Message, "security key") {
		t.Fatalf("password login through the API: %v", err)
	}
}

type loginEvent struct {
	User     string   `json:"user"`
	Success  bool     `json:"success"`
	MFA      string   `json:"mfa"`
	Reason   string   `json:"reason"`
	Error    string   `json:"error"`
	Roles    []string `json:"roles"`
	Withheld []string `json:"withheld_roles"`
}

func loginEvents(t *testing.T, w *world) []loginEvent {
	t.Helper()
	pg, err := webui.SearchAudit(ctxT(t), w.js, webui.Search{TypePrefix: "user.login"}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []loginEvent
	for _, r := range pg.Rows {
		var ev loginEvent
		if err := json.Unmarshal(r.Raw, &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// TestPasskeySignIn registers a passkey (a virtual authenticator that
// keeps its credential and verifies its user) and signs in with it alone:
// no user name, no password; the event says passkey. A browser whose
// authenticator holds no passkey of the site cannot, and an answer made
// up instead is refused and audited.
func TestPasskeySignIn(t *testing.T) {
	w := startWorldAt(t, "localhost")
	base := "https://" + w.ProxyAddr
	w.addUser(t, "alice", alicePW, access.RoleAccess)
	ctx := passkeyBrowser(t)
	signIn(t, ctx, base, "alice", alicePW)
	step(t, ctx, "register", chromedp.Navigate(base+"/mfa"), chromedp.WaitVisible(chromedp.CSS("#webauthn-add")),
		chromedp.Click(chromedp.CSS("#webauthn-add")), chromedp.WaitVisible(chromedp.CSS("#webauthn-result")))
	if got := text(t, ctx, "#webauthn-result"); got != "Security key added." {
		t.Fatalf("registration: %q", got)
	}
	step(t, ctx, "sign out", chromedp.Click(chromedp.CSS("form.signout button")), chromedp.WaitVisible(chromedp.CSS("#signin")))
	step(t, ctx, "passkey", chromedp.Click(chromedp.CSS("#passkey")), chromedp.WaitVisible(chromedp.CSS("form.signout")))
	if got := text(t, ctx, "form.signout .who"); got != "alice" {
		t.Fatalf("signed in as %q", got)
	}
	if evs := loginEvents(t, w); !evs[0].Success || evs[0].User != "alice" || evs[0].MFA != "webauthn" {
		t.Fatalf("passkey user.login: %+v", evs[0])
	}

	ctx2 := passkeyBrowser(t)
	step(t, ctx2, "sign-in page", chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#passkey")))
	step(t, ctx2, "no passkey here", chromedp.Click(chromedp.CSS("#passkey")), chromedp.WaitVisible(chromedp.CSS("#webauthn-error")))
	status := submit(t, ctx2, "made-up answer", chromedp.Evaluate[chromedp.Void](`document.getElementById("credential").value = JSON.stringify({id: "AAAA", rawId: "AAAA", type: "public-key", response: {authenticatorData: "AAAA", clientDataJSON: "e30", signature: "AAAA", userHandle: "AAAA"}}); document.getElementById("webauthn-login").submit()`))
	if status != 401 || !strings.Contains(text(t, ctx2, "#error"), "passkey's answer was not accepted") {
		t.Fatalf("made-up answer: %d %q", status, text(t, ctx2, "main"))
	}
	if n := eval[int](t, ctx2, `document.querySelectorAll('form.signout').length`); n != 0 {
		t.Fatal("signed in with a made-up passkey answer")
	}
	if evs := loginEvents(t, w); evs[0].Success || evs[0].Reason != "mfa_wrong" {
		t.Fatalf("made-up answer's event: %+v", evs[0])
	}
}

func passkeyBrowser(t *testing.T) context.Context {
	t.Helper()
	ctx := browser(t)
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Transport: webauthn.AuthenticatorTransportInternal,
		HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true}}); err != nil {
		t.Fatal(err)
	}
	return ctx
}
