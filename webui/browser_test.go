package webui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/webui"
)

const (
	alicePW = "correct horse battery staple 42"
	bobPW   = "tr0ub4dor & three more words"
)

// browser starts headless Chromium. A machine without it fails the test:
// the pages are only proven in a real browser (.ci/install-deps installs
// Debian's chromium).
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is needed to test the web UI (apt-get install chromium, or .ci/install-deps): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		// The broker's host certificate is issued by its own host CA,
		// which the browser's store does not hold.
		chromedp.IgnoreCertErrors,
		chromedp.WindowSize(1280, 900),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	// The first run starts the browser, tied to ctx's life.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// step runs actions with a time bound.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// submit runs actions that load a page and returns its HTTP status.
func submit(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) int64 {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := chromedp.RunResponse(sctx, actions...)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return resp.Status
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

func location(t *testing.T, ctx context.Context) string {
	return eval[string](t, ctx, `location.pathname + location.search`)
}

// shots are the pages pictured in docs/screenshots.
var shots = map[string]bool{"/audit?q=marker_4242": true, "/sessions/S-web-1": true, "/requests": true, "/databases": true, "/health": true}

// shoot writes a PNG of the whole page (`make screenshots` sets
// TOLLGATE_WEBUI_SCREENSHOTS to docs/screenshots).
func shoot(t *testing.T, ctx context.Context, file string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", file, err)
	}
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// pageName names a page's screenshot after its path.
func pageName(path string) string {
	name := strings.Trim(strings.NewReplacer("/", "-", "?", "-", "=", "-").Replace(path), "-")
	if name == "" {
		return "home"
	}
	return name
}

// signIn signs in through the form, typing as a person does: the user
// name, Tab to the password, Enter.
func signIn(t *testing.T, ctx context.Context, base, user, pw string) {
	t.Helper()
	step(t, ctx, "sign-in page", chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#signin")))
	status := submit(t, ctx, "sign in as "+user,
		chromedp.Focus(chromedp.CSS("#user")),
		chromedp.KeyEvent(user+"\t"+pw+"\r"))
	if status != 200 && status != 403 {
		t.Fatalf("sign in as %s: status %d: %q", user, status, text(t, ctx, "main"))
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('#signin').length`); n != 0 {
		t.Fatalf("sign in as %s: still on the form: %q", user, text(t, ctx, "main"))
	}
}

// publishSession stores a session's events through the publisher, as an
// agent does: its start, the statements with their results, its end.
func publishSession(t *testing.T, w *world, sid, user string, queries ...string) {
	t.Helper()
	db := events.Database{Service: "pg1", Protocol: "postgres", URI: "127.0.0.1:5432", User: "app", Name: "shop"}
	evs := []events.Event{&events.SessionStart{Database: db, Status: events.Status{Success: true}, ClientAddr: "127.0.0.1:5000"}}
	for _, q := range queries {
		evs = append(evs, &events.Query{Database: db, Query: q},
			&events.Result{Database: db, Status: events.Status{Success: true}, CommandTag: "SELECT 1", Rows: 1})
	}
	evs = append(evs, &events.SessionEnd{Database: db, Reason: "client", Statements: uint64(len(queries)), Rows: uint64(len(queries))})
	t0 := time.Now().UTC().Add(-time.Minute)
	for i, ev := range evs {
		h := ev.Header()
		h.User, h.Roles, h.Time = user, []string{access.RoleAccess}, t0.Add(time.Duration(i)*150*time.Millisecond)
		se := ev.(events.SessionEvent).SessionHeader()
		se.SID, se.EI = sid, uint64(i)
	}
	if err := w.pub.PublishBatch(ctxT(t), evs); err != nil {
		t.Fatal(err)
	}
}

// TestBrowser walks the pages as a person would in headless Chromium:
// sign in (a wrong password refused and audited), find a statement by
// its text on the audit page, open its session and replay it, approve an
// access request (a forged CSRF token refused), list databases, sign out;
// and a user without the editor role kept off the audit page.
func TestBrowser(t *testing.T) {
	w := startWorld(t)
	w.addUser(t, "alice", alicePW, access.RoleEditor, access.RoleReviewer, access.RoleAccess)
	w.addUser(t, "bob", bobPW, access.RoleRequester)
	publishSession(t, w, "S-web-1", "bob", "select marker_4242 from orders", "select now()")
	for i := range 60 {
		publishSession(t, w, fmt.Sprintf("S-noise-%d", i), "carol", "select 1")
	}
	if _, err := w.Store.RegisterDatabase(ctxT(t), admin, state.NewDatabase{Name: "pg1", Protocol: "postgres", URI: "127.0.0.1:5432",
		Labels: map[string]string{"env": "dev"}, HostID: "agent1", AgentAddr: "127.0.0.1:3036"}); err != nil {
		t.Fatal(err)
	}
	// A database whose agent is reached through a proxy's tunnel, as
	// PRESENCE announces it.
	if _, err := w.Store.RegisterDatabase(ctxT(t), admin, state.NewDatabase{Name: "maria1", Protocol: "mysql", URI: "10.0.0.7:3306",
		Labels: map[string]string{"env": "prod"}, HostID: "agent2", AgentAddr: w.ProxyAddr}); err != nil {
		t.Fatal(err)
	}
	pctx, stopProxy := context.WithCancel(context.Background())
	t.Cleanup(stopProxy)
	proxy := presence.NewAnnouncer(w.PresenceKV, "proxy-1", w.ProxyAddr, 0, nil)
	go proxy.Run(pctx)
	proxy.Add(pctx, "maria1", "agent2")
	waitUntil(t, "maria1's route", func() bool { return w.Presence.Online("maria1") })
	base := "https://" + w.Addr
	ctx := browser(t)

	// Signed out, every page leads to the sign-in form.
	step(t, ctx, "open /audit", chromedp.Navigate(base+"/audit"), chromedp.WaitVisible(chromedp.CSS("#signin")))
	if loc := location(t, ctx); !strings.HasPrefix(loc, "/login") {
		t.Fatalf("signed out, /audit led to %s", loc)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('label[for=user], label[for=password], input#user, input#password[type=password], button[type=submit]').length`); n != 5 {
		t.Fatalf("sign-in form: %d of its 5 labelled parts", n)
	}

	// A wrong password is refused, says so, and is audited as the API's.
	status := submit(t, ctx, "wrong password",
		chromedp.SendKeys(chromedp.CSS("#user"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), "not the password"),
		chromedp.Click(chromedp.CSS("#signin")))
	if status != 401 || !strings.Contains(text(t, ctx, "#error"), "wrong user name or password") {
		t.Fatalf("wrong password: status %d, page %q", status, text(t, ctx, "main"))
	}
	pg, err := webui.SearchAudit(ctxT(t), w.js, webui.Search{TypePrefix: "user.login", User: "alice"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var refused bool
	for _, r := range pg.Rows {
		var ev struct {
			Success bool   `json:"success"`
			Reason  string `json:"reason"`
			Path    string `json:"path"`
		}
		if json.Unmarshal(r.Raw, &ev) == nil && !ev.Success && ev.Reason == events.LoginWrongPassword && ev.Path == "POST /login" {
			refused = true
		}
	}
	if !refused {
		t.Fatalf("no user.login failure for alice in AUDIT: %+v", pg.Rows)
	}

	// A sign-in form whose CSRF token was changed is refused with 403.
	step(t, ctx, "reload sign-in", chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#signin")))
	status = submit(t, ctx, "forged sign-in",
		chromedp.SetValue(chromedp.CSS(`input[name=csrf]`), "forged"),
		chromedp.SendKeys(chromedp.CSS("#user"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), alicePW),
		chromedp.Click(chromedp.CSS("#signin")))
	if status != 403 {
		t.Fatalf("forged sign-in CSRF token: status %d, page %q", status, text(t, ctx, "main"))
	}

	// bob signs in, is kept off the audit trail (for editors, as the
	// API's sessions are), requests access and signs out.
	signIn(t, ctx, base, "bob", bobPW)
	if loc := location(t, ctx); loc != "/databases" || eval[int](t, ctx, `document.querySelectorAll('nav a[href="/audit"]').length`) != 0 {
		t.Fatalf("bob landed on %s, or sees the Audit link", loc)
	}
	status = submit(t, ctx, "bob on the audit page", chromedp.Navigate(base+"/audit"))
	if got := text(t, ctx, "#refused"); status != 403 || !strings.Contains(got, "needs the editor role") {
		t.Fatalf("bob on the audit page: status %d, %q", status, got)
	}
	step(t, ctx, "bob's requests", chromedp.Navigate(base+"/requests"), chromedp.WaitVisible(chromedp.CSS("#create")))
	status = submit(t, ctx, "request editor",
		chromedp.SendKeys(chromedp.CSS("#roles"), "editor"),
		chromedp.Click(chromedp.CSS("#create")))
	if got := text(t, ctx, "#error"); status != 403 || !strings.Contains(got, `allows requesting role "editor"`) {
		t.Fatalf("request for a role bob may not request: status %d, %q", status, got)
	}
	status = submit(t, ctx, "request access",
		chromedp.SendKeys(chromedp.CSS("#roles"), access.RoleAccess),
		chromedp.SendKeys(chromedp.CSS("#duration"), "2h"),
		chromedp.SendKeys(chromedp.CSS("#reason"), "fix the orders table"),
		chromedp.Click(chromedp.CSS("#create")))
	reqs := w.Requests.List()
	if status != 200 || len(reqs) != 1 || reqs[0].Requester != "bob" || reqs[0].Reason != "fix the orders table" || reqs[0].State != state.RequestPending {
		t.Fatalf("bob's request: status %d, %+v", status, reqs)
	}
	req := reqs[0]
	if got := text(t, ctx, "#requests tbody"); !strings.Contains(got, "pending") || strings.Contains(got, "Approve") {
		t.Fatalf("bob's requests: %q", got)
	}
	submit(t, ctx, "bob signs out", chromedp.Click(`//button[normalize-space()="Sign out"]`))

	// Sign in; the cookie is out of the page's reach.
	signIn(t, ctx, base, "alice", alicePW)
	if location(t, ctx) != "/audit" {
		t.Fatalf("signed in at %s: %q", location(t, ctx), text(t, ctx, "main"))
	}
	if c := eval[string](t, ctx, `document.cookie`); c != "" {
		t.Fatalf("a cookie is readable by scripts: %q", c)
	}

	// Audit: reached by its link, a statement found by its text, its JSON
	// shown, its session opened.
	step(t, ctx, "follow Audit", chromedp.Navigate(base+"/databases"), chromedp.WaitVisible(chromedp.CSS("#databases")))
	if got := text(t, ctx, "#databases tbody"); !strings.Contains(got, "pg1") || !strings.Contains(got, "env=dev") ||
		!strings.Contains(got, "tg db connect pg1") || !strings.Contains(got, `psql "service=tollgate-pg1"`) || !strings.Contains(got, "online") || !strings.Contains(got, "via proxy-1") {
		t.Fatalf("databases page: %q", got)
	}
	status = submit(t, ctx, "Audit link", chromedp.Click(`//nav//a[normalize-space()="Audit"]`))
	if status != 200 {
		t.Fatalf("audit page: %d", status)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('#events tbody tr').length`); n != 50 {
		t.Fatalf("first audit page holds %d events, want 50", n)
	}
	status = submit(t, ctx, "search", chromedp.SendKeys(chromedp.CSS("#q"), "MARKER_4242"), chromedp.Click(chromedp.CSS("#search")))
	rows := text(t, ctx, "#events tbody")
	if status != 200 || eval[int](t, ctx, `document.querySelectorAll('#events tbody tr').length`) != 1 ||
		!strings.Contains(rows, "select marker_4242 from orders") || !strings.Contains(rows, "S-web-1") {
		t.Fatalf("search for the statement: status %d, rows %q", status, rows)
	}
	dl := eval[string](t, ctx, `fetch(document.getElementById('download').href).then(r => r.text())`)
	if lines := strings.Split(strings.TrimSpace(dl), "\n"); len(lines) != 1 || !strings.Contains(lines[0], `"db_query":"select marker_4242 from orders"`) {
		t.Fatalf("download of the search: %q", dl)
	}
	step(t, ctx, "expand the event", chromedp.Click(chromedp.CSS("#events summary")), chromedp.WaitVisible(chromedp.CSS("#events pre.json")))
	if js := text(t, ctx, "#events pre.json"); !strings.Contains(js, `"db_query": "select marker_4242 from orders"`) || !strings.Contains(js, `"sid": "S-web-1"`) {
		t.Fatalf("event JSON: %s", js)
	}
	// Paging: the older page starts where the first ended, no event twice.
	step(t, ctx, "all events", chromedp.Navigate(base+"/audit"), chromedp.WaitVisible(chromedp.CSS("#events")))
	first := eval[[]string](t, ctx, `Array.from(document.querySelectorAll('#events pre.json')).map(p => p.textContent)`)
	status = submit(t, ctx, "older page", chromedp.Click(chromedp.CSS("#older")))
	second := eval[[]string](t, ctx, `Array.from(document.querySelectorAll('#events pre.json')).map(p => p.textContent)`)
	seen := map[string]bool{}
	for _, e := range append(first, second...) {
		if seen[e] {
			t.Fatalf("event on two pages: %s", e)
		}
		seen[e] = true
	}
	if status != 200 || len(second) != 50 {
		t.Fatalf("older page: status %d, %d events", status, len(second))
	}

	// The live tail: a statement run after the page loaded appears on it.
	step(t, ctx, "live search", chromedp.Navigate(base+"/audit?q=live_9999"), chromedp.WaitVisible(chromedp.CSS("#live")))
	step(t, ctx, "follow live", chromedp.Click(chromedp.CSS("#live")),
		chromedp.WaitVisible(chromedp.CSS(`#live-controls[data-state=following]`)))
	publishSession(t, w, "S-live", "bob", "select live_9999")
	step(t, ctx, "live event", chromedp.WaitVisible(chromedp.CSS(`#events tbody tr.new a.sid`)))
	if got := text(t, ctx, "#events tbody tr.new"); !strings.Contains(got, "select live_9999") || !strings.Contains(got, "S-live") {
		t.Fatalf("live row: %q", got)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('#events tbody tr.new').length`); n != 1 {
		t.Fatalf("%d live rows, want the one statement", n)
	}

	// The session's replay.
	step(t, ctx, "search again", chromedp.Navigate(base+"/audit?q=marker_4242"), chromedp.WaitVisible(chromedp.CSS("a.sid")))
	status = submit(t, ctx, "open the session", chromedp.Click(chromedp.CSS("a.sid")))
	if status != 200 || location(t, ctx) != "/sessions/S-web-1" {
		t.Fatalf("session page: status %d at %s", status, location(t, ctx))
	}
	tl := text(t, ctx, "#timeline")
	for _, want := range []string{"select marker_4242 from orders", "SELECT 1 (1 rows)", "select now()", "+0.150 s"} {
		if !strings.Contains(tl, want) {
			t.Fatalf("timeline lacks %q: %q", want, tl)
		}
	}
	step(t, ctx, "jump", chromedp.Click(chromedp.CSS(`#timeline button[aria-label="Jump to +0.300 s"]`)))
	if got, pending := text(t, ctx, "#clock"), eval[int](t, ctx, `document.querySelectorAll('#timeline .entry.pending').length`); got != "0.300 s" || pending != 3 {
		t.Fatalf("after a jump to 0.300 s: clock %q, %d entries pending (want 3)", got, pending)
	}
	step(t, ctx, "play", chromedp.Click(chromedp.CSS("#play")),
		chromedp.WaitVisible(chromedp.CSS(`#player[data-state=ended]`), chromedp.NodeVisible))
	if n := eval[int](t, ctx, `document.querySelectorAll('#timeline .entry.pending').length`); n != 0 {
		t.Fatalf("after the replay %d entries are still pending", n)
	}
	if got := text(t, ctx, "#clock"); got != "0.750 s" {
		t.Fatalf("replay clock at the end: %q", got)
	}
	step(t, ctx, "sessions list", chromedp.Navigate(base+"/sessions"), chromedp.WaitVisible(chromedp.CSS("#sessions")))
	if got := text(t, ctx, "#sessions tbody"); !strings.Contains(got, "S-web-1") || !strings.Contains(got, "S-noise-59") {
		t.Fatalf("sessions list: %q", got)
	}

	// Access requests: the badge counts bob's request; a forged token is
	// refused; alice approves with a reason.
	if got := text(t, ctx, "#pending-badge"); got != "1" {
		t.Fatalf("pending badge: %q", got)
	}
	step(t, ctx, "requests", chromedp.Navigate(base+"/requests"), chromedp.WaitVisible(chromedp.CSS("#requests")))
	status = submit(t, ctx, "forged review",
		chromedp.SetValue(chromedp.CSS(`form.review input[name=csrf]`), "forged"),
		chromedp.Click(chromedp.CSS(`form.review button[value=deny]`)))
	if r, _ := w.Requests.Get(req.ID); status != 403 || r.State != state.RequestPending {
		t.Fatalf("forged review: status %d, request %s", status, r.State)
	}
	step(t, ctx, "requests again", chromedp.Navigate(base+"/requests"), chromedp.WaitVisible(chromedp.CSS("#requests")))
	status = submit(t, ctx, "approve",
		chromedp.SendKeys(chromedp.CSS(`form.review input[name=reason]`), "ok for the migration"),
		chromedp.Click(chromedp.CSS(`form.review button[value=approve]`)))
	r, _ := w.Requests.Get(req.ID)
	if status != 200 || r.State != state.RequestApproved || len(r.Reviews) != 1 || r.Reviews[0].Reviewer != "alice" || r.Reviews[0].Reason != "ok for the migration" {
		t.Fatalf("approve: status %d, request %+v", status, r)
	}
	if got := text(t, ctx, "#req-"+req.ID+" .state"); !strings.Contains(got, "approved") {
		t.Fatalf("request row after approval: %q", got)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('#pending-badge').length`); n != 0 {
		t.Fatal("the pending badge stayed after the review")
	}

	// An editor ends a live session from its page with a lock; the lock
	// is listed and can be lifted.
	{
		db := events.Database{Service: "pg1", Protocol: "postgres", URI: "127.0.0.1:5432", User: "app", Name: "shop"}
		start := &events.SessionStart{Database: db, Status: events.Status{Success: true}}
		start.Header().User, start.SID = "bob", "S-open"
		if err := w.pub.Publish(ctxT(t), start); err != nil {
			t.Fatal(err)
		}
	}
	step(t, ctx, "live session", chromedp.Navigate(base+"/sessions/S-open"), chromedp.WaitVisible(chromedp.CSS("#end-session")))
	status = submit(t, ctx, "end the session",
		chromedp.SendKeys(chromedp.CSS("#end-message"), "please stop, maintenance"),
		chromedp.Click(chromedp.CSS("#end-session")))
	var lock state.Lock
	for _, k := range w.Store.Locks() {
		if k.TargetSession == "S-open" {
			lock = k
		}
	}
	if status != 200 || lock.CreatedBy != "alice" || lock.Message != "please stop, maintenance" || !strings.Contains(text(t, ctx, "#notice"), "lock on this session") {
		t.Fatalf("end session: status %d, lock %+v", status, lock)
	}
	status = submit(t, ctx, "Locks link", chromedp.Click(`//nav//a[normalize-space()="Locks"]`))
	if got := text(t, ctx, "#locks tbody"); status != 200 || !strings.Contains(got, "session S-open") || !strings.Contains(got, "by alice") {
		t.Fatalf("locks page: status %d, %q", status, got)
	}
	status = submit(t, ctx, "remove the lock", chromedp.Click(chromedp.CSS(`#locks button`)))
	for _, k := range w.Store.Locks() {
		if k.ID == lock.ID && k.Active(time.Now()) {
			t.Fatalf("lock %s still in force after its removal (status %d)", k.ID, status)
		}
	}

	// Users and roles, for editors, through the API's admin operations.
	if status = submit(t, ctx, "Users link", chromedp.Click(`//nav//a[normalize-space()="Users"]`)); status != 200 {
		t.Fatalf("users page: %d", status)
	}
	status = submit(t, ctx, "add a user",
		chromedp.SendKeys(chromedp.CSS("#user-name"), "dora"),
		chromedp.SendKeys(chromedp.CSS("#user-roles"), "access, requester"),
		chromedp.Click(chromedp.CSS("#add-user")))
	if got := text(t, ctx, "#login-command"); status != 200 || !strings.Contains(got, "tg login") || !strings.Contains(got, "dora") {
		t.Fatalf("add user: status %d, login command %q", status, got)
	}
	if u, ok := w.Store.User("dora"); !ok || u.CreatedBy != "alice" || !slices.Equal(u.Roles, []string{"access", "requester"}) {
		t.Fatalf("dora in STATE: %+v %v", u, ok)
	}
	status = submit(t, ctx, "remove the user", chromedp.Click(chromedp.CSS(`#users button[aria-label="Remove user dora"]`)))
	if _, ok := w.Store.User("dora"); status != 200 || ok {
		t.Fatalf("remove user: status %d, still there %v", status, ok)
	}
	if status = submit(t, ctx, "Roles link", chromedp.Click(`//nav//a[normalize-space()="Roles"]`)); status != 200 {
		t.Fatalf("roles page: %d", status)
	}
	status = submit(t, ctx, "apply a role",
		chromedp.SetValue(chromedp.CSS("#roles-yaml"), "kind: role\nmetadata: {name: dba, description: production admins}\nspec:\n  allow:\n    db_labels: {env: prod}\n    db_users: [admin]\n"),
		chromedp.Click(chromedp.CSS("#apply-roles")))
	if got := text(t, ctx, "#applied"); status != 200 || !strings.Contains(got, "dba: created") || !strings.Contains(text(t, ctx, "#roles tbody"), "production admins") {
		t.Fatalf("apply role: status %d, %q", status, got)
	}
	status = submit(t, ctx, "apply a broken role",
		chromedp.SetValue(chromedp.CSS("#roles-yaml"), "kind: role\nmetadata: {name: dba}\nspec: {allow: {no_such_rule: 1}}\n"),
		chromedp.Click(chromedp.CSS("#apply-roles")))
	if got := text(t, ctx, "#error"); status != 400 || !strings.Contains(got, "Roles not changed") {
		t.Fatalf("broken role: status %d, %q", status, got)
	}

	// Health: the agent serving pg1 and its heartbeat.
	if status = submit(t, ctx, "Health link", chromedp.Click(`//nav//a[normalize-space()="Health"]`)); status != 200 {
		t.Fatalf("health page: %d", status)
	}
	if got := text(t, ctx, "#agents tbody"); !strings.Contains(got, "agent1") || !strings.Contains(got, "pg1") || !strings.Contains(got, "online") {
		t.Fatalf("agents: %q", got)
	}
	if got := text(t, ctx, "#proxy-proxy-1"); !strings.Contains(got, w.ProxyAddr) || !strings.Contains(got, "maria1") {
		t.Fatalf("proxies: %q", got)
	}
	if got := text(t, ctx, "#exporters tbody"); !strings.Contains(got, "No exporter") {
		t.Fatalf("exporters: %q", got)
	}

	// Every page fits a 1280 px screen and a phone's without sideways
	// scrolling.
	for _, vp := range []struct {
		w, h   int64
		mobile bool
	}{{1280, 900, false}, {390, 844, true}} {
		emu := chromedp.EmulateViewport(vp.w, vp.h)
		if vp.mobile {
			emu = chromedp.EmulateViewport(vp.w, vp.h, chromedp.EmulateMobile, chromedp.EmulateScale(2))
		}
		step(t, ctx, "viewport", emu)
		for _, path := range []string{"/audit", "/audit?q=marker_4242", "/sessions", "/sessions/S-web-1", "/requests", "/databases", "/locks", "/users", "/roles", "/health"} {
			step(t, ctx, path, chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.CSS("h1")))
			if over := eval[int](t, ctx, `document.documentElement.scrollWidth - document.documentElement.clientWidth`); over > 0 {
				t.Errorf("%s at %d px is %d px too wide", path, vp.w, over)
			}
			if dir := os.Getenv("TOLLGATE_WEBUI_SCREENSHOTS"); dir != "" && shots[path] {
				shoot(t, ctx, filepath.Join(dir, fmt.Sprintf("%s-%d.png", pageName(path), vp.w)))
			}
		}
	}
	step(t, ctx, "desktop again", chromedp.EmulateViewport(1280, 900))

	// Sign out: the session is gone on the server too.
	status = submit(t, ctx, "sign out", chromedp.Click(`//button[normalize-space()="Sign out"]`))
	if status != 200 || !strings.HasPrefix(location(t, ctx), "/login") {
		t.Fatalf("sign out: status %d at %s", status, location(t, ctx))
	}
	step(t, ctx, "audit after sign-out", chromedp.Navigate(base+"/audit"), chromedp.WaitVisible(chromedp.CSS("#signin")))
	bobs, _ := w.Requests.Get(req.ID)
	if bobs.State != state.RequestApproved {
		t.Fatalf("bob's request after the review: %s", bobs.State)
	}

}
