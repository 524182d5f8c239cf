// Package webui serves Tollgate's web pages on the broker's HTTPS API
// listener: sign in, the audit trail, sessions with their replay, access
// requests and databases. Pages are rendered on the server with
// html/template from files embedded in the binary; the only script is a
// small replay player, so there is no build step.
//
// A web session is a user certificate like the one `tg login` gets: the
// sign-in runs the API's password login (login.Service.Login, with its
// rate limits and user.login events) for a key the broker makes and then
// forgets, and every page authenticates that certificate as the API
// authenticates a client's (login.Service.Authenticate), so a removed
// user, a role taken away or a lock ends the web session as it ends API
// access, and the session ends when the certificate expires. The cookie
// holds only a random handle; the certificate is kept under the handle's
// hash in the WEB_SESSIONS bucket (websession.go), so any broker of the
// cluster serves the session, and a restart does not end it.
package webui

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/admin"
	"github.com/tollgate-db/tollgate/broker/apiserver"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/broker/requests"
	"github.com/tollgate-db/tollgate/broker/sso"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Cookie names use the __Host- prefix: browsers accept such a cookie only
// with Secure, Path=/ and no Domain, so no other host or plain-HTTP page
// can plant or read it.
const (
	sessionCookie = "__Host-tollgate-ui"
	// loginCookie carries the sign-in form's CSRF token before there is a
	// session (double submit: the form's field must equal it).
	loginCookie = "__Host-tollgate-login"
	csrfField   = "csrf"
)

// Options are what the pages need of the broker.
type Options struct {
	Login    *login.Service
	Requests *requests.Service
	Store    *state.Store
	Admin    *admin.Service
	// Exporters are the configured exporters, listed even before they
	// first run.
	Exporters []config.Exporter
	// Presence follows the proxies and the agent tunnels they hold, for
	// the health page; nil shows no proxies.
	Presence *presence.View
	JS       jetstream.JetStream
	// Sessions is the WEB_SESSIONS bucket (EnsureSessions).
	Sessions jetstream.KeyValue
	Log      *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// UI is the web UI's handler state.
type UI struct {
	o    Options
	api  *apiserver.Server
	tmpl map[string]*template.Template
}

// Mount serves the UI at / on the API's server. The API's /v1/ paths are
// unchanged.
func Mount(srv *apiserver.Server, o Options) *UI {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sessions == nil {
		// A wiring mistake, not a condition to run with: sign-ins would
		// have nowhere to live.
		panic("webui: Options.Sessions (the WEB_SESSIONS bucket) is required")
	}
	u := &UI{o: o, api: srv, tmpl: parseTemplates()}
	static, _ := fs.Sub(staticFS, "static")
	srv.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	// Editors start on the audit trail; others on what they may use.
	srv.Handle("GET /{$}", u.page(func(w http.ResponseWriter, r *http.Request, c *caller) {
		if c.editor() {
			http.Redirect(w, r, "/audit", http.StatusSeeOther)
			return
		}
		http.Redirect(w, r, "/databases", http.StatusSeeOther)
	}))
	srv.Handle("GET /login", http.HandlerFunc(u.loginForm))
	srv.Handle("POST /login", http.HandlerFunc(u.loginSubmit))
	srv.Handle("POST /login/webauthn", http.HandlerFunc(u.loginKey))
	srv.Handle("GET /login/passkey", http.HandlerFunc(u.passkeyStart))
	srv.Handle("POST /login/passkey", http.HandlerFunc(u.loginPasskey))
	srv.Handle("GET /login/key", http.HandlerFunc(u.tgKeyLogin))
	srv.Handle("POST /login/key", http.HandlerFunc(u.tgKeyLoginFinish))
	srv.Handle("GET /mfa/key", http.HandlerFunc(u.tgKeyRegister))
	srv.Handle("POST /mfa/key", http.HandlerFunc(u.tgKeyRegisterFinish))
	srv.Handle("GET /mfa", u.page(u.mfaPage))
	srv.Handle("POST /mfa/webauthn/begin", u.page(u.registerBegin))
	srv.Handle("POST /mfa/webauthn/finish", u.page(u.registerFinish))
	srv.Handle("POST /logout", u.page(u.logout))
	srv.Handle("GET /audit", u.page(u.audit))
	srv.Handle("GET /audit/download", u.page(u.auditDownload))
	srv.Handle("GET /audit/live", u.page(u.auditLive))
	srv.Handle("GET /sessions", u.page(u.sessionList))
	// A session id may hold a slash, so the rest of the path is the id.
	srv.Handle("GET /sessions/{sid...}", u.page(u.sessionPage))
	srv.Handle("GET /requests", u.page(u.requestList))
	srv.Handle("POST /requests", u.page(u.createRequest))
	srv.Handle("POST /requests/{id}/review", u.page(u.review))
	srv.Handle("GET /databases", u.page(u.databases))
	srv.Handle("GET /locks", u.page(u.lockList))
	srv.Handle("POST /locks", u.page(u.addLock))
	srv.Handle("POST /locks/{id}/remove", u.page(u.removeLock))
	srv.Handle("GET /users", u.page(u.userList))
	srv.Handle("POST /users", u.page(u.addUser))
	srv.Handle("POST /users/{name}/remove", u.page(u.removeUser))
	srv.Handle("GET /roles", u.page(u.roleList))
	srv.Handle("POST /roles", u.page(u.upsertRoles))
	srv.Handle("GET /health", u.page(u.health))
	return u
}

var funcs = template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05.000Z")
	},
	"join": strings.Join,
	// indent shows an event's JSON as stored, indented for reading.
	"indent": indentJSON,
	"ms": func(d time.Duration) string {
		return fmt.Sprintf("%.3f", float64(d)/float64(time.Second))
	},
}

func parseTemplates() map[string]*template.Template {
	pages, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(p, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		out[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", p))
	}
	return out
}

// caller is the signed-in user of a request, as the API sees them now.
type caller struct {
	id    identity.Identity
	token string
	csrf  string
}

func (c *caller) editor() bool { return slices.Contains(c.id.Roles, access.RoleEditor) }

// view is what every page's layout gets.
type view struct {
	Title   string
	Nav     string
	User    string
	CSRF    string
	Editor  bool
	Pending int
	Error   string
	// Notice says what an action just did.
	Notice string
	Data   any
}

func (u *UI) render(w http.ResponseWriter, status int, name string, v view) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// The pages load nothing from elsewhere and run only their own
	// script file; frames are refused so no page can be overlaid.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "same-origin")
	w.WriteHeader(status)
	if err := u.tmpl[name].Execute(w, v); err != nil {
		u.o.Log.Error("render page", "page", name, "err", err)
	}
}

func (u *UI) view(c *caller, title, nav string, data any) view {
	v := view{Title: title, Nav: nav, Data: data}
	if c != nil {
		v.User, v.CSRF, v.Editor = c.id.User, c.csrf, c.editor()
		v.Pending = u.pendingReviews(c.id)
	}
	return v
}

// page wraps a handler that needs a signed-in user: without a live web
// session the browser is sent to sign in; a POST must carry the
// session's CSRF token and come from this origin.
func (u *UI) page(h func(http.ResponseWriter, *http.Request, *caller)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := u.authenticate(r)
		if errors.Is(err, errStore) {
			u.o.Log.Error("web session", "err", err)
			u.render(w, http.StatusServiceUnavailable, "error", view{Title: "Unavailable", Data: "Web sessions cannot be read now; try again shortly."})
			return
		}
		if err != nil {
			next := "/login"
			if r.Method == http.MethodGet && r.URL.Path != "/" {
				next += "?next=" + url.QueryEscape(r.URL.RequestURI())
			}
			if !errors.Is(err, errNoSession) {
				next = addQuery(next, "ended", "1")
			}
			http.Redirect(w, r, next, http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost && !u.postAllowed(r, c.csrf) {
			u.render(w, http.StatusForbidden, "error", u.view(c, "Refused", "", "The form's security token does not match your session; reload the page and try again."))
			return
		}
		h(w, r, c)
	})
}

func addQuery(path, k, v string) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + k + "=" + url.QueryEscape(v)
}

var errNoSession = errors.New("no web session")

func (u *UI) authenticate(r *http.Request) (*caller, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, errNoSession
	}
	rec, cert, err := u.getSession(r.Context(), ck.Value)
	if err != nil {
		return nil, err
	}
	if !u.o.Now().Before(rec.Expires) || !u.o.Now().Before(cert.NotAfter) {
		u.drop(r.Context(), ck.Value)
		return nil, errors.New("certificate expired")
	}
	// The API's own check of a client certificate, so a web page is
	// refused exactly when the API would refuse the user (and the refusal
	// is audited the same way).
	id, err := u.o.Login.Authenticate(r.Context(), []*x509.Certificate{cert}, apiserver.RequestMeta(r))
	if err != nil {
		u.drop(r.Context(), ck.Value)
		return nil, err
	}
	if id.User != rec.User {
		u.drop(r.Context(), ck.Value)
		return nil, fmt.Errorf("web session of %s holds a certificate of %s", rec.User, id.User)
	}
	return &caller{id: id, token: ck.Value, csrf: csrfToken(ck.Value)}, nil
}

// drop ends a session that may no longer be used; should the bucket not
// take the deletion, the next page refuses it again.
func (u *UI) drop(ctx context.Context, handle string) {
	if err := u.dropSession(ctx, handle); err != nil {
		u.o.Log.Warn("web session not deleted", "err", err)
	}
}

// postAllowed checks a form post: the CSRF token of the form against
// want, and the Origin header, when the browser sends one, against this
// host.
func (u *UI) postAllowed(r *http.Request, want string) bool {
	if o := r.Header.Get("Origin"); o != "" {
		ou, err := url.Parse(o)
		if err != nil || ou.Host != r.Host {
			return false
		}
	}
	got := r.PostFormValue(csrfField)
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

type loginData struct {
	User, Next string
	Connectors []ssoButton
}

func (u *UI) loginForm(w http.ResponseWriter, r *http.Request) {
	tok := randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	v := view{Title: "Sign in", CSRF: tok, Data: loginData{Next: safeNext(r.URL.Query().Get("next")), Connectors: u.connectors()}}
	if r.URL.Query().Get("ended") != "" {
		v.Error = "Your session ended; sign in again."
	}
	u.render(w, http.StatusOK, "login", v)
}

// safeNext keeps a return path on this site: a path, never a URL another
// site could be reached by. Browsers drop tabs and newlines from URLs and
// read a backslash as a slash, so a path holding any of them is refused
// too ("/\t/evil.example" would become "//evil.example").
func safeNext(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsFunc(p, func(r rune) bool {
		return r < 0x20 || r == 0x7f || r == '\\'
	}) {
		return "/"
	}
	return p
}

func (u *UI) loginSubmit(w http.ResponseWriter, r *http.Request) {
	ck, err := r.Cookie(loginCookie)
	if err != nil || !u.postAllowed(r, ck.Value) {
		u.render(w, http.StatusForbidden, "error", view{Title: "Refused", Data: "The sign-in form's security token does not match; reload the sign-in page and try again."})
		return
	}
	user, pw, next := strings.TrimSpace(r.PostFormValue("user")), r.PostFormValue("password"), safeNext(r.PostFormValue("next"))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// The API's password login: the same checks, limits and user.login
	// event; the certificate it issues is the web session.
	is, err := u.o.Login.Login(r.Context(), login.Request{User: user, Password: pw, OTP: r.PostFormValue("otp"), PublicKey: key.Public(), Meta: apiserver.RequestMeta(r)})
	if err != nil {
		status, msg := http.StatusInternalServerError, err.Error()
		var ref *login.Refusal
		if errors.As(err, &ref) {
			status, msg = ref.Status, ref.Message
			if ref.WebAuthn != nil {
				u.askKey(w, ck.Value, user, next, ref.WebAuthn)
				return
			}
		} else if errors.Is(err, login.ErrAudit) || errors.Is(err, context.Canceled) {
			status = http.StatusServiceUnavailable
		}
		v := view{Title: "Sign in", CSRF: ck.Value, Error: msg, Data: loginData{User: user, Next: next, Connectors: u.connectors()}}
		u.render(w, status, "login", v)
		return
	}
	u.SignedIn(w, r, is.Cert, next)
}

// SignedIn makes cert the browser's session and sends it to next: the end
// of a password sign-in, and of a single sign-on (broker/sso/oidcflow).
func (u *UI) SignedIn(w http.ResponseWriter, r *http.Request, cert *x509.Certificate, next string) {
	tok := randomToken()
	if err := u.putSession(r.Context(), tok, cert); err != nil {
		u.o.Log.Error("web session", "err", err)
		u.render(w, http.StatusServiceUnavailable, "error", view{Title: "Unavailable", Data: "The sign-in succeeded but its web session could not be stored; try again shortly."})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: tok, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, Expires: cert.NotAfter})
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	if r.Method == http.MethodGet || strings.HasPrefix(r.URL.Path, "/sso/") {
		// A single sign-on ends on a redirect (OIDC) or a form post (SAML)
		// from the identity provider, a cross-site navigation that does not
		// carry SameSite=Strict cookies, nor does a redirect that follows
		// it; a page of this site moving on does.
		w.Header().Set("Refresh", "0;url="+safeNext(next))
		u.render(w, http.StatusOK, "continue", view{Title: "Signed in", Data: safeNext(next)})
		return
	}
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
}

// Refused shows why a single sign-on failed, with the way back.
func (u *UI) Refused(w http.ResponseWriter, r *http.Request, status int, msg string) {
	v := view{Title: "Sign in", Error: msg, Data: loginData{Next: "/", Connectors: u.connectors()}}
	tok := randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	v.CSRF = tok
	u.render(w, status, "login", v)
}

// ssoButton is a connector as the sign-in page offers it.
type ssoButton struct{ Name, Label, URL string }

func (u *UI) connectors() []ssoButton {
	var out []ssoButton
	for _, c := range u.o.Store.Connectors() {
		label := c.Display
		if label == "" {
			label = c.Name
		}
		out = append(out, ssoButton{Name: c.Name, Label: label, URL: sso.ConnectorLoginPath(c)})
	}
	return out
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request, c *caller) {
	// Deleted before the cookie is cleared: a copy of the cookie must
	// not outlive the sign-out on any broker.
	if err := u.dropSession(r.Context(), c.token); err != nil {
		u.o.Log.Error("sign out", "err", err)
		u.render(w, http.StatusServiceUnavailable, "error", u.view(c, "Not signed out", "", "The session could not be deleted; try signing out again."))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// forbidden answers a page the caller's roles do not open, naming the
// role as the API does.
func (u *UI) forbidden(w http.ResponseWriter, c *caller, role string) {
	u.render(w, http.StatusForbidden, "error", u.view(c, "Not allowed", "",
		fmt.Sprintf("This page needs the %s role; user %s holds [%s].", role, c.id.User, strings.Join(c.id.Roles, ", "))))
}
