package webui_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/webui"
)

// sessionCookieOf reads the browser's web session cookie (HttpOnly, so
// out of the page's reach) through the DevTools protocol.
func sessionCookieOf(t *testing.T, ctx context.Context, base string) string {
	t.Helper()
	res, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) (*network.GetCookiesResult, error) {
		r, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
		return &r, err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Cookies {
		if c.Name == "__Host-tollgate-ui" {
			if !c.HTTPOnly || !c.Secure {
				t.Fatalf("session cookie without HttpOnly or Secure: %+v", c)
			}
			return c.Value
		}
	}
	t.Fatalf("no session cookie for %s among %d", base, len(res.Cookies))
	return ""
}

// get asks addr for /audit with cookie as a browser would send it, and
// returns the status and where a redirect leads.
func get(t *testing.T, client *http.Client, addr, cookie string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, "https://"+addr+"/audit", nil)
	req.Header.Set("Cookie", "__Host-tollgate-ui="+cookie)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

// TestWebSessionAcrossBrokers signs in through one broker in Chromium,
// restarts it, and uses the same cookie on the restarted broker and on a
// second broker of the cluster (another data dir with the same CAs, on
// the same NATS); signing out on one ends the session on all; a forged or
// unknown cookie is refused; a lock on the user ends the session.
func TestWebSessionAcrossBrokers(t *testing.T) {
	w := startWorld(t)
	w.addUser(t, "alice", alicePW, access.RoleEditor, access.RoleAccess)
	dir := w.CAs.Dir()
	dataDir := filepath.Dir(dir)
	hostCA, err := w.CAs.Cert(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(hostCA)
	client := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(client.CloseIdleConnections)

	ctx := browser(t)
	signIn(t, ctx, "https://"+w.Addr, "alice", alicePW)
	if loc := location(t, ctx); loc != "/audit" {
		t.Fatalf("signed in at %s", loc)
	}
	handle := sessionCookieOf(t, ctx, "https://"+w.Addr)

	// The bucket holds the handle's hash with the user and certificate,
	// never the handle.
	kv, err := w.js.KeyValue(ctxT(t), webui.SessionBucket)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(handle))
	e, err := kv.Get(ctxT(t), hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatalf("the session's record: %v", err)
	}
	if v := string(e.Value()); !strings.Contains(v, `"user":"alice"`) || strings.Contains(v, handle) || strings.Contains(v, "PRIVATE") {
		t.Fatalf("session record: %s", v)
	}

	// Restart: the first broker stops, another starts on the same data
	// dir and NATS (on another port, which a cookie does not tell apart).
	stopFirst := w.stop
	stopFirst()
	b2, _ := startBroker(t, dataDir, "", w.srv, w.js, w.pub)
	if b2.Addr == w.Addr {
		t.Fatal("the restarted broker listens where the first did; the test wants another port")
	}
	step(t, ctx, "audit on the restarted broker", chromedp.Navigate("https://"+b2.Addr+"/audit"), chromedp.WaitVisible(chromedp.CSS("h1")))
	if loc, who := location(t, ctx), text(t, ctx, ".who"); loc != "/audit" || who != "alice" {
		t.Fatalf("after a restart the session led to %s as %q", loc, who)
	}

	// A second broker of the cluster: its own data dir with the CAs.
	dir3 := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir3, "ca"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, ty := range ca.Types {
		for _, f := range []string{string(ty) + ".key", string(ty) + ".crt"} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir3, "ca", f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	b3, _ := startBroker(t, dir3, "", w.srv, w.js, w.pub)
	if status, _ := get(t, client, b3.Addr, handle); status != http.StatusOK {
		t.Fatalf("the second broker answers the session's cookie with %d", status)
	}
	// A form posted to the second broker carries the token the first
	// rendered: the CSRF token is the same on every broker.
	step(t, ctx, "locks on the second broker", chromedp.Navigate("https://"+b3.Addr+"/locks"), chromedp.WaitVisible(chromedp.CSS("h1")))
	if loc := location(t, ctx); loc != "/locks" {
		t.Fatalf("the second broker sent the browser to %s", loc)
	}

	// Forged and unknown cookies are refused: sent to sign in.
	unknown := make([]byte, 32)
	_, _ = rand.Read(unknown)
	for _, c := range []string{"forged", base64.RawURLEncoding.EncodeToString(unknown), handle + "x"} {
		if status, loc := get(t, client, b2.Addr, c); status != http.StatusSeeOther || !strings.HasPrefix(loc, "/login") {
			t.Fatalf("cookie %q: status %d to %q", c, status, loc)
		}
	}

	// Signing out on the restarted broker ends the session on the second
	// one: the same cookie, replayed, is refused and the record is gone.
	step(t, ctx, "back to the restarted broker", chromedp.Navigate("https://"+b2.Addr+"/audit"), chromedp.WaitVisible(chromedp.CSS("h1")))
	if status := submit(t, ctx, "sign out", chromedp.Click(`//button[normalize-space()="Sign out"]`)); status != 200 || !strings.HasPrefix(location(t, ctx), "/login") {
		t.Fatalf("sign out: status %d at %s", status, location(t, ctx))
	}
	for _, addr := range []string{b2.Addr, b3.Addr} {
		if status, loc := get(t, client, addr, handle); status != http.StatusSeeOther || !strings.HasPrefix(loc, "/login") {
			t.Fatalf("the signed-out cookie at %s: status %d to %q", addr, status, loc)
		}
	}
	if _, err := kv.Get(ctxT(t), hex.EncodeToString(sum[:])); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the record after sign-out: %v", err)
	}

	// A lock on the user ends a web session on every broker for good: the
	// record is deleted, so lifting the lock does not bring it back.
	signIn(t, ctx, "https://"+b3.Addr, "alice", alicePW)
	handle = sessionCookieOf(t, ctx, "https://"+b3.Addr)
	if status, _ := get(t, client, b2.Addr, handle); status != http.StatusOK {
		t.Fatalf("a fresh session on the other broker: %d", status)
	}
	lock, err := b2.Store.CreateLock(ctxT(t), admin, state.NewLock{TargetUser: "alice", Message: "investigation"})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the lock on both brokers", func() bool { return len(b3.Store.Locks()) == 1 && len(b2.Store.Locks()) == 1 })
	if status, loc := get(t, client, b3.Addr, handle); status != http.StatusSeeOther || loc != "/login?next=%2Faudit&ended=1" {
		t.Fatalf("a locked user's cookie: status %d to %q", status, loc)
	}
	if err := b2.Store.DeleteLock(ctxT(t), admin, lock.ID); err != nil {
		t.Fatal(err)
	}
	if status, _ := get(t, client, b2.Addr, handle); status != http.StatusSeeOther {
		t.Fatalf("a session ended by a lock came back when it was lifted: %d", status)
	}

	// Removing the user ends their web session on every broker too.
	waitUntil(t, "the lock lifted on both brokers", func() bool { return len(b3.Store.Locks()) == 0 && len(b2.Store.Locks()) == 0 })
	signIn(t, ctx, "https://"+b2.Addr, "alice", alicePW)
	handle = sessionCookieOf(t, ctx, "https://"+b2.Addr)
	if status, _ := get(t, client, b3.Addr, handle); status != http.StatusOK {
		t.Fatalf("a session after the lock was lifted: %d", status)
	}
	if err := b2.Admin.As(admin, "").RemoveUser(ctxT(t), "alice"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the removal on both brokers", func() bool {
		_, on2 := b2.Store.User("alice")
		_, on3 := b3.Store.User("alice")
		return !on2 && !on3
	})
	if status, loc := get(t, client, b3.Addr, handle); status != http.StatusSeeOther || loc != "/login?next=%2Faudit&ended=1" {
		t.Fatalf("a removed user's cookie: status %d to %q", status, loc)
	}
	sum = sha256.Sum256([]byte(handle))
	if _, err := kv.Get(ctxT(t), hex.EncodeToString(sum[:])); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the record of a removed user's session: %v", err)
	}
}

// TestWebSessionExpires: a web session lasts as long as its certificate.
// Its record carries a TTL at the certificate's expiry, so the bucket
// drops it on its own, and the browser is then sent to sign in.
func TestWebSessionExpires(t *testing.T) {
	w := startWorld(t)
	if _, err := w.Admin.As(admin, "").UpsertRoles(ctxT(t), "kind: role\nmetadata: {name: brief}\nspec:\n  options: {max_session_ttl: 3s}\n"); err != nil {
		t.Fatal(err)
	}
	w.addUser(t, "erin", alicePW, access.RoleAccess, "brief")
	base := "https://" + w.Addr
	ctx := browser(t)
	signIn(t, ctx, base, "erin", alicePW)
	if loc := location(t, ctx); loc != "/databases" {
		t.Fatalf("signed in at %s", loc)
	}
	handle := sessionCookieOf(t, ctx, base)
	kv, err := w.js.KeyValue(ctxT(t), webui.SessionBucket)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(handle))
	key := hex.EncodeToString(sum[:])
	msg, err := w.js.Stream(ctxT(t), "KV_"+webui.SessionBucket)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := msg.GetLastMsgForSubject(ctxT(t), "$KV."+webui.SessionBucket+"."+key)
	if err != nil {
		t.Fatal(err)
	}
	if ttl := raw.Header.Get("Nats-TTL"); ttl != "3s" && ttl != "4s" {
		t.Fatalf("the record's TTL is %q, want the certificate's 3 s rounded up", ttl)
	}
	// Nobody reads the session in the meantime: the bucket drops it.
	waitUntil(t, "the record to expire", func() bool {
		_, err := kv.Get(ctxT(t), key)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	step(t, ctx, "a page after expiry", chromedp.Navigate(base+"/requests"), chromedp.WaitVisible(chromedp.CSS("#signin")))
	if loc := location(t, ctx); !strings.HasPrefix(loc, "/login?next=%2Frequests") {
		t.Fatalf("after expiry the browser is at %s", loc)
	}
}
