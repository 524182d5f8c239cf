package notify_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/notify"
	"github.com/tollgate-db/tollgate/broker/requests"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/exporters"
)

// hook is a webhook receiver that answers 503 to the first failFirst
// posts, then 200, and records the texts it accepted.
type hook struct {
	mu        sync.Mutex
	failFirst int
	posts     int
	texts     []string
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var m notify.Message
	if r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &m) != nil || m.Text == "" {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.posts++
	if h.posts <= h.failFirst {
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	h.texts = append(h.texts, m.Text)
	_, _ = io.WriteString(w, "ok")
}

func (h *hook) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.texts...)
}

// TestWebhookThroughExporter: an exporter with the webhook sink posts the
// life of an access request, in order, through a webhook that fails at
// first (retried with backoff), and ignores other events.
func TestWebhookThroughExporter(t *testing.T) {
	h := &hook{failFirst: 2}
	srv := httptest.NewServer(h)
	defer srv.Close()

	ns, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(t.TempDir(), "nats"), Listen: natsserver.InProcessOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(ctx, js, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	admin := state.Actor{User: "admin", Roles: []string{"editor"}}
	for _, n := range []string{"alice", "bob"} {
		roles := []string{access.RoleRequester}
		if n == "bob" {
			roles = []string{access.RoleReviewer}
		}
		if _, err := store.CreateUser(ctx, admin, state.NewUser{Name: n, Roles: roles}); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := requests.New(ctx, js, store, requests.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	r, err := svc.Create(ctx, identity.Identity{User: "alice", Roles: []string{access.RoleRequester}},
		requests.CreateRequest{Roles: []string{access.RoleAccess}, Reason: "on call"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Review(ctx, identity.Identity{User: "bob", Roles: []string{access.RoleReviewer}}, r.ID, events.ReviewApprove, "go ahead"); err != nil {
		t.Fatal(err)
	}

	sink, err := notify.New(notify.Config{URL: srv.URL + "/hooks/T000/B000/secret"})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(js, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(context.Background())
	x, err := exporters.New(exporters.Options{Name: "requests", SinkType: notify.Type, Sink: sink, JS: js, Publisher: pub,
		Delivery: exporters.Delivery{Streams: []string{"STATE"}, Linger: config.Duration(10 * time.Millisecond),
			BackoffMin: config.Duration(20 * time.Millisecond), BackoffMax: config.Duration(50 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	xctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- x.Run(xctx) }()
	defer func() { stop(); <-done }()

	deadline := time.Now().Add(20 * time.Second)
	for len(h.got()) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := h.got()
	if len(got) != 3 {
		t.Fatalf("webhook got %d messages: %q", len(got), got)
	}
	for i, want := range []string{"*alice* requests roles *access*", "*bob* approved request " + r.ID + " (1 of 1 approvals)", "request " + r.ID + " is now *approved*"} {
		if !strings.Contains(got[i], want) {
			t.Fatalf("message %d %q lacks %q", i, got[i], want)
		}
	}
	h.mu.Lock()
	posts := h.posts
	h.mu.Unlock()
	if posts != 5 {
		t.Fatalf("%d posts for 3 messages after 2 refusals", posts)
	}
	if !strings.Contains(got[0], "> on call") || !strings.Contains(got[0], "tg request review "+r.ID) {
		t.Fatalf("request message: %q", got[0])
	}
}

// TestWebhookRefusal: a 4xx answer is permanent (dead-lettered by the
// exporter), a 5xx one is retried; neither error shows the URL, which is
// a secret.
func TestWebhookRefusal(t *testing.T) {
	status := http.StatusBadRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no_text", status) }))
	defer srv.Close()
	secret := srv.URL + "/hooks/very-secret-token"
	sink, err := notify.New(notify.Config{URL: secret})
	if err != nil {
		t.Fatal(err)
	}
	ev := &events.AccessRequestUpdate{RequestID: "R1", State: "denied"}
	if err := events.Stamp(ev, "c"); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(ev)
	other, _ := json.Marshal(map[string]any{"type": "user.create", "name": "x"})
	recs := []exporters.Record{{Event: other}, {Event: data}}
	err = sink.Deliver(context.Background(), recs)
	re, ok := err.(exporters.RecordErrors)
	if !ok || len(re) != 1 || re[1] == nil || !exporters.IsPermanent(re[1]) {
		t.Fatalf("400: %v", err)
	}
	status = http.StatusBadGateway
	err = sink.Deliver(context.Background(), recs)
	re, ok = err.(exporters.RecordErrors)
	if !ok || exporters.IsPermanent(re[1]) {
		t.Fatalf("502: %v", err)
	}
	if strings.Contains(err.Error(), "very-secret-token") {
		t.Fatalf("the error shows the webhook URL: %v", err)
	}
	if _, err := notify.New(notify.Config{URL: "ftp://x"}); err == nil {
		t.Fatal("a non-HTTP URL was accepted")
	}
}
