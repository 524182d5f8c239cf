package webui_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/broker/state"
)

// TestPresencePages checks in headless Chromium that the databases page
// says online or offline, and through which proxies, as the API's
// database list (and so `db ls`) decides it from PRESENCE, and that the
// health page lists each proxy with its lease and the tunnels it holds.
func TestPresencePages(t *testing.T) {
	w := startWorld(t)
	w.addUser(t, "alice", alicePW, access.RoleEditor, access.RoleAccess)
	// Two agents reached through proxies (their address is a proxy's)
	// and one reached directly.
	for _, d := range []state.NewDatabase{
		{Name: "pg-tunneled", Protocol: "postgres", URI: "10.1.0.1:5432", HostID: "agent-t", AgentAddr: w.ProxyAddr},
		{Name: "pg-dark", Protocol: "postgres", URI: "10.1.0.2:5432", HostID: "agent-d", AgentAddr: w.ProxyAddr},
		{Name: "pg-direct", Protocol: "postgres", URI: "10.1.0.3:5432", HostID: "agent-x", AgentAddr: "127.0.0.1:3036"},
	} {
		if _, err := w.Store.RegisterDatabase(ctxT(t), admin, d); err != nil {
			t.Fatal(err)
		}
	}
	actx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	pa := presence.NewAnnouncer(w.PresenceKV, "proxy-a", w.ProxyAddr, 0, nil)
	pb := presence.NewAnnouncer(w.PresenceKV, "proxy-b", "127.0.0.2:3080", 0, nil)
	for _, a := range []*presence.Announcer{pa, pb} {
		go a.Run(actx)
		a.Add(actx, "pg-tunneled", "agent-t")
	}
	waitUntil(t, "both proxies and their routes in the broker's view", func() bool {
		return len(w.Presence.Proxies()) == 2 && len(w.Presence.Routes("pg-tunneled")) == 2
	})

	base := "https://" + w.Addr
	ctx := browser(t)
	signIn(t, ctx, base, "alice", alicePW)

	// dbPage reads each row's state cell and checks it against the API's
	// list, the one `tollgate db ls` prints.
	dbPage := func(want map[string]string) {
		t.Helper()
		step(t, ctx, "databases", chromedp.Navigate(base+"/databases"), chromedp.WaitVisible(chromedp.CSS("#databases")))
		listed, err := w.Admin.As(admin, "").Databases(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range listed {
			got := strings.Join(strings.Fields(text(t, ctx, "#db-"+d.Name+" .state")), " ")
			ls := "offline"
			if d.Online {
				ls = "online"
			}
			if len(d.Proxies) > 0 {
				ls += " via " + strings.Join(d.Proxies, ", ")
			}
			if got != ls || got != want[d.Name] {
				t.Errorf("%s: page says %q, the API's list %q, want %q", d.Name, got, ls, want[d.Name])
			}
		}
		if len(listed) != len(want) {
			t.Fatalf("the API lists %d databases, want %d", len(listed), len(want))
		}
	}
	dbPage(map[string]string{"pg-tunneled": "online via proxy-a, proxy-b", "pg-dark": "offline", "pg-direct": "online"})

	// Health: each proxy, its address, how long ago it renewed its lease
	// and the tunnel it holds.
	step(t, ctx, "health", chromedp.Navigate(base+"/health"), chromedp.WaitVisible(chromedp.CSS("#proxies")))
	for id, addr := range map[string]string{"proxy-a": w.ProxyAddr, "proxy-b": "127.0.0.2:3080"} {
		row := text(t, ctx, "#proxy-"+id)
		if !strings.Contains(row, addr) || !strings.Contains(text(t, ctx, "#proxy-"+id+" .tunnels"), "pg-tunneled from agent-t") {
			t.Fatalf("health row of %s: %q", id, row)
		}
		age, err := strconv.ParseFloat(strings.TrimSuffix(text(t, ctx, "#proxy-"+id+" .age"), " s ago"), 64)
		if err != nil || age < 0 || age > presence.DefaultLease.Seconds() {
			t.Fatalf("lease age of %s: %q (%v), want within the lease", id, text(t, ctx, "#proxy-"+id+" .age"), err)
		}
	}
	if got := strings.Join(strings.Fields(text(t, ctx, "#agents")), " "); !strings.Contains(got, "online via proxy-a, proxy-b") || !strings.Contains(got, "agent-d") {
		t.Fatalf("agents on the health page: %q", got)
	}

	// A tunnel closes on one proxy, then on the other: the page follows.
	pa.Remove(actx, "pg-tunneled", "agent-t")
	waitUntil(t, "the route through proxy-a gone", func() bool { return len(w.Presence.Routes("pg-tunneled")) == 1 })
	dbPage(map[string]string{"pg-tunneled": "online via proxy-b", "pg-dark": "offline", "pg-direct": "online"})
	pb.Remove(actx, "pg-tunneled", "agent-t")
	waitUntil(t, "no route left", func() bool { return len(w.Presence.Routes("pg-tunneled")) == 0 })
	dbPage(map[string]string{"pg-tunneled": "offline", "pg-dark": "offline", "pg-direct": "online"})
	step(t, ctx, "health again", chromedp.Navigate(base+"/health"), chromedp.WaitVisible(chromedp.CSS("#proxies")))
	if got := text(t, ctx, "#proxy-proxy-a .tunnels"); got != "none" {
		t.Fatalf("proxy-a's tunnels after the route went: %q", got)
	}

	// A proxy stopped cleanly leaves the page.
	stop()
	waitUntil(t, "the proxies withdrawn", func() bool { return len(w.Presence.Proxies()) == 0 })
	step(t, ctx, "health without proxies", chromedp.Navigate(base+"/health"), chromedp.WaitVisible(chromedp.CSS("#proxies")))
	if got := text(t, ctx, "#proxies tbody"); !strings.Contains(got, "No proxy holds a lease") {
		t.Fatalf("proxies after they stopped: %q", got)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !ok(); {
		if time.Now().After(end) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
