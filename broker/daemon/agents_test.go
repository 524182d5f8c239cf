package daemon_test

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/login"
)

// joinHost joins an agent with a fresh single-use token and returns an API
// client presenting its host certificate.
func (b *testBroker) joinHost(tb testing.TB, hostID string) *api.Client {
	tb.Helper()
	tok, err := b.Admin.As(admin, "").AddToken(ctxT(tb), api.AddTokenRequest{Type: "db"})
	if err != nil {
		tb.Fatal(err)
	}
	k := newKey(tb)
	res, err := b.client(tb, nil).Join(ctxT(tb), api.JoinRequest{Token: tok.Value, HostID: hostID, PublicKey: pubPEM(tb, k)})
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := api.ParseCertificatePEM([]byte(res.CertPEM))
	if err != nil {
		tb.Fatal(err)
	}
	return b.client(tb, &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: k, Leaf: leaf})
}

// An agent registers its databases under the host id of its certificate;
// it cannot take over a database another agent registered and still
// heartbeats, only one whose heartbeats stopped; and it gets db-client
// certificates only for the databases registered to it, the refusal
// naming the database and the hosts.
func TestAgentRegisterAndDBClientScope(t *testing.T) {
	b := startBroker(t, login.Options{})
	ctx := ctxT(t)
	h1, h2 := b.joinHost(t, "host-1"), b.joinHost(t, "host-2")
	pgA := api.RegisterDatabase{Name: "pg-a", Protocol: "postgres", URI: "db-a.internal:5432", Labels: map[string]string{"env": "prod"},
		AgentAddr: "host-1.internal:3080", HeartbeatTTL: api.Duration(time.Second)}
	got, err := h1.AgentRegister(ctx, api.RegisterRequest{Databases: []api.RegisterDatabase{pgA}})
	if err != nil || len(got) != 1 || got[0].HostID != "host-1" || !got[0].Live {
		t.Fatalf("registration: %+v %v", got, err)
	}
	if d, ok := b.Store.Database("pg-a"); !ok || d.HostID != "host-1" || d.AgentAddr != "host-1.internal:3080" || d.Labels["env"] != "prod" {
		t.Fatalf("stored registration %+v", d)
	}

	// host-2 serving a database of the same name while host-1 is live.
	takeover := pgA
	takeover.AgentAddr, takeover.HeartbeatTTL = "host-2.internal:3080", api.Duration(time.Minute)
	_, err = h2.AgentRegister(ctx, api.RegisterRequest{Databases: []api.RegisterDatabase{takeover}})
	if statusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "host host-2 cannot register database pg-a: it is registered to host host-1, whose heartbeat is live") {
		t.Fatalf("takeover of a live database: %v", err)
	}
	if d, _ := b.Store.Database("pg-a"); d.HostID != "host-1" {
		t.Fatalf("pg-a taken over: %+v", d)
	}

	// db-client certificates: for pg-a only to host-1.
	k := newKey(t)
	if _, err := h1.AgentDBClient(ctx, api.DBClientRequest{Database: "pg-a", DBUser: "postgres", PublicKey: pubPEM(t, k)}); err != nil {
		t.Fatalf("host-1 for its own database: %v", err)
	}
	_, err = h2.AgentDBClient(ctx, api.DBClientRequest{Database: "pg-a", DBUser: "postgres", PublicKey: pubPEM(t, k)})
	if statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), `database "pg-a" is registered to host host-1, not to host host-2`) {
		t.Fatalf("host-2 for host-1's database: %v", err)
	}
	_, err = h2.AgentDBClient(ctx, api.DBClientRequest{Database: "pg-z", DBUser: "postgres", PublicKey: pubPEM(t, k)})
	if statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), `database "pg-z" is not registered; host host-2`) {
		t.Fatalf("host-2 for an unknown database: %v", err)
	}
	if _, err := h2.AgentDBClient(ctx, api.DBClientRequest{DBUser: "postgres", PublicKey: pubPEM(t, k)}); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("no database named: %v", err)
	}

	// Once host-1's heartbeats stopped (TTL 1s), host-2 may serve pg-a.
	time.Sleep(1100 * time.Millisecond)
	got, err = h2.AgentRegister(ctx, api.RegisterRequest{Databases: []api.RegisterDatabase{takeover}})
	if err != nil || got[0].HostID != "host-2" || got[0].AgentAddr != "host-2.internal:3080" {
		t.Fatalf("registration after host-1's heartbeats stopped: %+v %v", got, err)
	}
	if _, err := h2.AgentDBClient(ctx, api.DBClientRequest{Database: "pg-a", DBUser: "postgres", PublicKey: pubPEM(t, k)}); err != nil {
		t.Fatalf("host-2 for the database it now serves: %v", err)
	}
	if evs := b.audit(t, "cert.issue"); evs[len(evs)-1].str("user") != "host:host-2" {
		t.Fatalf("audit: %s", evs[len(evs)-1].raw)
	}

	// Without a host certificate: nothing is registered.
	if _, err := b.client(t, nil).AgentRegister(ctx, api.RegisterRequest{Databases: []api.RegisterDatabase{pgA}}); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("registration without a certificate: %v", err)
	}
	invite := b.addUser(t, "alice", "editor")
	uc, _, err := b.login(t, b.client(t, nil), "alice", goodPassword, invite)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.client(t, uc).AgentRegister(ctx, api.RegisterRequest{Databases: []api.RegisterDatabase{pgA}}); statusOf(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "host certificate is not valid") {
		t.Fatalf("registration with a user certificate: %v", err)
	}
}

// A token created with --reusable lets several agents join until it
// expires; one created without works once.
func TestReusableJoinToken(t *testing.T) {
	b := startBroker(t, login.Options{})
	ctx := ctxT(t)
	a := b.Admin.As(admin, "")
	reusable, err := a.AddToken(ctx, api.AddTokenRequest{Type: "db", Reusable: true})
	if err != nil || reusable.Token.SingleUse {
		t.Fatalf("reusable token %+v: %v", reusable, err)
	}
	once, err := a.AddToken(ctx, api.AddTokenRequest{Type: "db"})
	if err != nil || !once.Token.SingleUse {
		t.Fatalf("single-use token %+v: %v", once, err)
	}
	c := b.client(t, nil)
	join := func(tok, host string) error {
		_, err := c.Join(ctx, api.JoinRequest{Token: tok, HostID: host, PublicKey: pubPEM(t, newKey(t))})
		return err
	}
	for _, h := range []string{"r-1", "r-2", "r-3"} {
		if err := join(reusable.Value, h); err != nil {
			t.Fatalf("%s with the reusable token: %v", h, err)
		}
	}
	if err := join(once.Value, "s-1"); err != nil {
		t.Fatal(err)
	}
	if err := join(once.Value, "s-2"); statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "join token refused: single-use token already used by s-1") {
		t.Fatalf("single-use token used twice: %v", err)
	}
	ts, err := a.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range ts {
		if tk.ID == reusable.Token.ID && (tk.Uses != 3 || tk.LastUsedBy != "r-3") {
			t.Fatalf("reusable token listed as %+v", tk)
		}
	}
}
