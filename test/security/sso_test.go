package security

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/daemon"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/sso"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/test/oidcop"
	"github.com/tollgate-db/tollgate/webui"
)

// ssoWorld is a broker in this process (embedded NATS, strict publisher,
// the API and web UI on a loopback port) with a connector to a real
// OpenID Provider on loopback.
type ssoWorld struct {
	b    *daemon.Broker
	js   jetstream.JetStream
	idp  *oidcop.Provider
	base string
}

const (
	ssoSessionCookie = "__Host-tollgate-ui"
	ssoIdPPassword   = "password-at-the-provider"
)

func newSSOWorld(t *testing.T) *ssoWorld {
	t.Helper()
	dir := t.TempDir()
	ncfg := config.Default()
	ncfg.DataDir = dir
	ncfg.NATS.Embedded.StoreDir = filepath.Join(dir, "nats")
	ncfg.NATS.Embedded.Listen = "127.0.0.1:0"
	so, err := natsserver.FromConfig(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsserver.Start(so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.ConnectAs(natsserver.Broker)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(js, config.DefaultCluster)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.NATS.Embedded.StoreDir = ncfg.NATS.Embedded.StoreDir
	cfg.NATS.Embedded.Listen = srv.NATSServer().Addr().String()
	cfg.Proxy.Listen, cfg.Proxy.PublicAddr = ln.Addr().String(), ln.Addr().String()
	b, err := daemon.Start(ctx, daemon.Options{Config: cfg, JS: js, Audit: pub, Listener: ln, Login: login.Options{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = b.Wait()
	})
	w := &ssoWorld{b: b, js: js, base: "https://" + b.ProxyAddr}
	w.idp = oidcop.Start(t, "tollgate", "client-secret", []string{w.base + sso.CallbackPath("corp")},
		oidcop.User{Username: "alice", Password: ssoIdPPassword, Email: "alice@example.com", Groups: []string{"dba"}},
		oidcop.User{Username: "eve", Password: ssoIdPPassword, Email: "eve@example.com", Groups: []string{"guests"}})
	admin := state.Actor{User: "admin", Roles: []string{access.RoleEditor}}
	if _, err := b.Admin.As(admin, "").UpsertConnectors(ctx, fmt.Sprintf(`kind: connector
metadata: {name: corp}
spec:
  type: oidc
  issuer_url: %s
  client_id: tollgate
  client_secret: client-secret
  scopes: [email]
  claims_to_roles: [{claim: groups, value: dba, roles: [access]}]
`, w.idp.Issuer)); err != nil {
		t.Fatal(err)
	}
	return w
}

// browser is a user agent with its own cookies that follows redirects
// until the provider sends it back to the broker's callback.
func (w *ssoWorld) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Jar:       jar,
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // the broker's own host CA
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Path == sso.CallbackPath("corp") {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
}

// begin starts a web sign-in with c and logs in at the provider as user;
// it returns the callback URL (code and state) the provider sent back.
func (w *ssoWorld) begin(t *testing.T, c *http.Client, user string) *url.URL {
	t.Helper()
	resp, err := c.Get(w.base + sso.LoginPath("corp"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Request.URL.Query().Get("authRequestID")
	if resp.StatusCode != 200 || id == "" {
		t.Fatalf("the provider's login page: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	resp, err = c.PostForm(w.idp.Issuer+"/login/username", url.Values{"id": {id}, "username": {user}, "password": {ssoIdPPassword}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || loc.Path != sso.CallbackPath("corp") || loc.Query().Get("code") == "" {
		t.Fatalf("the provider did not send the browser back with a code: %d %v %v", resp.StatusCode, loc, err)
	}
	return loc
}

// finish presents a callback URL; it returns the status, the page, and
// whether a web session cookie was set.
func (w *ssoWorld) finish(t *testing.T, c *http.Client, u *url.URL) (int, string, bool) {
	t.Helper()
	resp, err := c.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	return answer(resp)
}

// answer is a broker's answer to a sign-in step: its status, its page and
// whether it set a web session cookie.
func answer(resp *http.Response) (int, string, bool) {
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	session := false
	for _, ck := range resp.Cookies() {
		if ck.Name == ssoSessionCookie && ck.Value != "" {
			session = true
		}
	}
	return resp.StatusCode, string(body), session
}

// lastLogin is the newest oidc user.login event.
func (w *ssoWorld) lastLogin(t *testing.T) map[string]any { return w.lastLoginBy(t, events.LoginOIDC) }

// lastLoginBy is the newest user.login event of method.
func (w *ssoWorld) lastLoginBy(t *testing.T, method string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pg, err := webui.SearchAudit(ctx, w.js, webui.Search{TypePrefix: "user.login"}, 20)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range pg.Rows {
		var ev map[string]any
		if json.Unmarshal(r.Raw, &ev) == nil && ev["method"] == method {
			return ev
		}
	}
	t.Fatalf("no %s user.login event in AUDIT", method)
	return nil
}

// refusedWith checks that a callback was refused, that no web session was
// made, and that the refusal is in AUDIT with reason (and, in its error,
// detail).
func (w *ssoWorld) refusedWith(t *testing.T, what string, status int, page string, session bool, reason, detail string) {
	t.Helper()
	w.refusedBy(t, events.LoginOIDC, "corp", what, status, page, session, reason, detail)
}

// refusedBy is refusedWith for a login of method through connector.
func (w *ssoWorld) refusedBy(t *testing.T, method, connector, what string, status int, page string, session bool, reason, detail string) {
	t.Helper()
	if status < 400 || session {
		t.Fatalf("%s: the attack worked: status %d, session %v\n%s", what, status, session, page)
	}
	ev := w.lastLoginBy(t, method)
	if ev["success"] != false || ev["reason"] != reason || ev["connector"] != connector {
		t.Fatalf("%s: last user.login %v, want a refusal with reason %s", what, ev, reason)
	}
	if e, _ := ev["error"].(string); !strings.Contains(e, detail) {
		t.Fatalf("%s: the event's error %q does not say %q", what, e, detail)
	}
}

// TestSSOState: a state the broker never issued, one already used, and
// one presented by another browser are refused, and the genuine callback
// still signs in (so the refusals are the checks', not a broken flow).
func TestSSOState(t *testing.T) {
	w := newSSOWorld(t)
	c := w.browser()
	cb := w.begin(t, c, "alice")

	forged := *cb
	q := forged.Query()
	q.Set("state", "forged-"+q.Get("state")[:10])
	forged.RawQuery = q.Encode()
	st, page, ok := w.finish(t, c, &forged)
	w.refusedWith(t, "forged state", st, page, ok, events.LoginSSOBadState, "unknown, expired or reused state")

	// The same code and state from a browser that did not start the login
	// (login CSRF, or a URL lifted from a log): the state is used up too.
	st, page, ok = w.finish(t, w.browser(), cb)
	w.refusedWith(t, "state from another browser", st, page, ok, events.LoginSSOBadState, "without the browser binding")
	st, page, ok = w.finish(t, c, cb)
	w.refusedWith(t, "state already presented", st, page, ok, events.LoginSSOBadState, "unknown, expired or reused state")

	cb = w.begin(t, c, "alice")
	if st, page, ok := w.finish(t, c, cb); st != 200 || !ok {
		t.Fatalf("genuine callback: status %d session %v\n%s", st, ok, page)
	}
	if ev := w.lastLogin(t); ev["success"] != true || ev["user"] != "alice@example.com" {
		t.Fatalf("genuine callback: %v", ev)
	}
	st, page, ok = w.finish(t, c, cb)
	w.refusedWith(t, "replayed callback", st, page, ok, events.LoginSSOBadState, "unknown, expired or reused state")
}

// TestSSOReplayedCode: a code already exchanged, brought to a fresh
// attempt's state, is refused by the provider and so by the broker.
func TestSSOReplayedCode(t *testing.T) {
	w := newSSOWorld(t)
	c := w.browser()
	first := w.begin(t, c, "alice")
	if st, page, ok := w.finish(t, c, first); st != 200 || !ok {
		t.Fatalf("first sign-in: %d %v\n%s", st, ok, page)
	}
	second := w.begin(t, c, "alice")
	q := second.Query()
	q.Set("code", first.Query().Get("code"))
	second.RawQuery = q.Encode()
	st, page, ok := w.finish(t, c, second)
	w.refusedWith(t, "replayed code", st, page, ok, events.LoginSSOCodeRejected, "code exchange")
}

// TestSSOIDToken: ID tokens that are altered, or signed by the provider
// itself but for another client, expired, or for another sign-in, are
// refused.
func TestSSOIDToken(t *testing.T) {
	w := newSSOWorld(t)
	cases := []struct {
		name, reason, detail string
		change               func(t *testing.T, claims map[string]any, raw string) string
	}{
		{"altered payload", events.LoginSSOBadToken, "signature", func(t *testing.T, claims map[string]any, raw string) string {
			parts := strings.Split(raw, ".")
			claims["sub"] = "someone-else"
			b, _ := json.Marshal(claims)
			return parts[0] + "." + b64(b) + "." + parts[2]
		}},
		{"another audience", events.LoginSSOBadToken, "audience", func(t *testing.T, claims map[string]any, _ string) string {
			claims["aud"] = []string{"another-client"}
			return w.idp.Sign(t, claims)
		}},
		{"expired", events.LoginSSOBadToken, "expired", func(t *testing.T, claims map[string]any, _ string) string {
			claims["iat"], claims["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
			return w.idp.Sign(t, claims)
		}},
		{"another sign-in's nonce", events.LoginSSOBadNonce, "nonce", func(t *testing.T, claims map[string]any, _ string) string {
			claims["nonce"] = "a-nonce-of-another-login"
			return w.idp.Sign(t, claims)
		}},
	}
	for _, tc := range cases {
		c := w.browser()
		cb := w.begin(t, c, "alice")
		w.idp.TamperTokens(func(answer map[string]any) {
			raw, _ := answer["id_token"].(string)
			answer["id_token"] = tc.change(t, oidcop.Claims(t, raw), raw)
		})
		st, page, ok := w.finish(t, c, cb)
		w.idp.TamperTokens(nil)
		w.refusedWith(t, tc.name, st, page, ok, tc.reason, tc.detail)
	}
	// Untouched, the same flow signs in.
	c := w.browser()
	if st, page, ok := w.finish(t, c, w.begin(t, c, "alice")); st != 200 || !ok {
		t.Fatalf("genuine sign-in: %d %v\n%s", st, ok, page)
	}
}

// TestSSONoRole: a user whose claims map to no role is refused, told why,
// and the refusal names the user.
func TestSSONoRole(t *testing.T) {
	w := newSSOWorld(t)
	c := w.browser()
	st, page, ok := w.finish(t, c, w.begin(t, c, "eve"))
	w.refusedWith(t, "claims mapping to no role", st, page, ok, events.LoginSSONoRole, "eve@example.com has no role")
	if !strings.Contains(page, "has no role") {
		t.Fatalf("the page does not say why:\n%s", page)
	}
	if ev := w.lastLogin(t); ev["user"] != "eve@example.com" {
		t.Fatalf("refusal without the user: %v", ev)
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// TestSSORequireMFA: a role with require_mfa that the claims map to is
// left out of a single sign-on whose provider checked only a password
// (amr [pwd]), and granted when the provider's token says it checked more
// (amr with mfa, signed by the provider).
func TestSSORequireMFA(t *testing.T) {
	w := newSSOWorld(t)
	admin := state.Actor{User: "admin", Roles: []string{access.RoleEditor}}
	ctx := context.Background()
	if _, err := w.b.Admin.As(admin, "").UpsertRoles(ctx, "kind: role\nmetadata: {name: dba}\nspec:\n  options: {require_mfa: true}\n  allow: {db_users: ['*'], db_names: ['*']}\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.b.Admin.As(admin, "").UpsertConnectors(ctx, fmt.Sprintf(`kind: connector
metadata: {name: corp}
spec:
  type: oidc
  issuer_url: %s
  client_id: tollgate
  client_secret: client-secret
  scopes: [email]
  claims_to_roles: [{claim: groups, value: dba, roles: [access, dba]}]
`, w.idp.Issuer)); err != nil {
		t.Fatal(err)
	}
	c := w.browser()
	if st, page, ok := w.finish(t, c, w.begin(t, c, "alice")); st != 200 || !ok {
		t.Fatalf("sign-in: %d %v\n%s", st, ok, page)
	}
	ev := w.lastLogin(t)
	if fmt.Sprint(ev["roles"]) != "[access]" || fmt.Sprint(ev["withheld_roles"]) != "[dba]" || ev["mfa"] != nil {
		t.Fatalf("password-only sign-in: %v", ev)
	}
	c = w.browser()
	cb := w.begin(t, c, "alice")
	w.idp.TamperTokens(func(answer map[string]any) {
		claims := oidcop.Claims(t, answer["id_token"].(string))
		claims["amr"] = []string{"pwd", "otp", "mfa"}
		answer["id_token"] = w.idp.Sign(t, claims)
	})
	st, page, ok := w.finish(t, c, cb)
	w.idp.TamperTokens(nil)
	if st != 200 || !ok {
		t.Fatalf("sign-in with a second factor: %d %v\n%s", st, ok, page)
	}
	ev = w.lastLogin(t)
	if fmt.Sprint(ev["roles"]) != "[access dba]" || ev["withheld_roles"] != nil || ev["mfa"] != events.MFAProvider {
		t.Fatalf("sign-in with a second factor: %v", ev)
	}
}
