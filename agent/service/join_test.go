package service_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/agent/service"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
)

// An agent on another machine (its own data dir, no CAs, broker.enabled
// false) joins the broker with a token and the pinned host CA, then logs in
// to PostgreSQL with db-client certificates the broker's API signs for its
// host certificate, each audited; restarted, it uses what it kept and
// needs no token, and renews its host certificate when it serves a new
// database. A wrong pin spends nothing, and the signing operation refuses a
// user certificate.
func TestServiceJoinsRemoteBroker(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := f.broker(ctx, t)
	acfg, tok := f.joiner(ctx, t, b)

	// A pin that is not the broker's: refused before the token is sent.
	acfg.DBService.BrokerCAPin = "sha256:" + strings.Repeat("ab", 32)
	if _, err := service.Start(ctx, service.Options{Config: &acfg, JS: f.js, Recorder: f.pub, Log: quiet()}); err == nil ||
		!strings.Contains(err.Error(), "not db_service.broker_ca_pin") || strings.Contains(err.Error(), tok.Value) {
		t.Fatalf("wrong pin: %v", err)
	}

	acfg.DBService.BrokerCAPin = tok.HostCAPin
	id := identity.Identity{User: "alice", Roles: []string{"access"},
		Traits: map[string][]string{identity.TraitDBUsers: {"app"}, identity.TraitDBNames: {"postgres"}}}
	session := func(s *service.Service, db string) {
		t.Helper()
		conn, err := connect(ctx, t, s.Addr, f.userTLS(t, db, id), "app")
		if err != nil {
			t.Fatalf("through the joined agent: %v", err)
		}
		defer conn.Close(ctx)
		var who string
		if err := conn.QueryRow(ctx, "select current_user").Scan(&who); err != nil || who != "app" {
			t.Fatalf("current_user %q: %v", who, err)
		}
	}
	// Joined; restarted without the token (it was single use); restarted
	// with a second database, which the host certificate does not name yet:
	// the agent renews it with the current one.
	for round, db := range []string{"pg1", "pg1", "crdb"} {
		if round == 2 {
			acfg.DBService.Databases = f.cfg.DBService.Databases
		}
		actx, stop := context.WithCancel(ctx)
		s, err := service.Start(actx, service.Options{Config: &acfg, JS: f.js, Recorder: f.pub, Log: quiet()})
		if err != nil {
			stop()
			t.Fatalf("start %d: %v", round, err)
		}
		session(s, db)
		stop()
		if err := s.Wait(); err != nil {
			t.Fatal(err)
		}
		acfg.DBService.JoinToken = ""
	}

	var joins, renewals, signed int
	for _, ev := range auditOfType(t, f.js, "cert.issue") {
		switch ev["purpose"] {
		case "join":
			joins++
		case "renew":
			if ev["ca_type"] != string(ca.Host) || !slices.Contains(ev["hosts"].([]any), any("crdb")) {
				t.Fatalf("renewal recorded as %v", ev)
			}
			renewals++
		case "agent":
			if ev["ca_type"] != string(ca.DBClient) || ev["subject"] != "app" || !strings.HasPrefix(ev["user"].(string), "host:") {
				t.Fatalf("db-client certificate for the agent recorded as %v", ev)
			}
			signed++
		}
	}
	if joins != 1 || renewals != 1 || signed != 3 {
		t.Fatalf("%d joins, %d renewals and %d db-client certificates for the agent recorded, want 1, 1 and 3", joins, renewals, signed)
	}

	// A user certificate does not get db-client certificates.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	userCert, _, err := f.cas.IssueUser(key.Public(), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	hostCA, _ := f.cas.Cert(ca.Host)
	roots := x509.NewCertPool()
	roots.AddCert(hostCA)
	c, err := api.NewClient(b.Addr, api.TLSConfig("127.0.0.1", roots, &tls.Certificate{Certificate: [][]byte{userCert.Raw}, PrivateKey: key}), "test")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := api.EncodePublicKey(key.Public())
	if _, err := c.AgentDBClient(ctx, api.DBClientRequest{DBUser: "app", PublicKey: pub}); err == nil || !strings.Contains(err.Error(), "host certificate is not valid") {
		t.Fatalf("db-client certificate for a user certificate: %v", err)
	}
}

// A proxy joins with a proxy token and renews its certificate with the
// current one, as an agent renews its host certificate: the new one, for
// the same names, is kept where JoinProxy finds it at the next start.
func TestProxyJoinAndRenew(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := f.broker(ctx, t)
	tok, err := b.Admin.As(state.Actor{User: "admin"}, "test").AddToken(ctx, api.AddTokenRequest{Type: "proxy"})
	if err != nil {
		t.Fatal(err)
	}
	dir, names := t.TempDir(), []string{"proxy1.example.test"}
	first, _, err := service.JoinProxy(ctx, b.Addr, tok.Value, tok.HostCAPin, dir, names)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := service.RenewProxy(ctx, b.Addr, dir, names)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 || renewed.Leaf.Subject.CommonName != ca.ProxyHostID ||
		renewed.Leaf.VerifyHostname(names[0]) != nil {
		t.Fatalf("renewed certificate: serial %x (first %x), %q, names %v", renewed.Leaf.SerialNumber, first.Leaf.SerialNumber,
			renewed.Leaf.Subject.CommonName, renewed.Leaf.DNSNames)
	}
	// The token was single use: the next start reads the renewed one.
	kept, _, err := service.JoinProxy(ctx, b.Addr, "", "", dir, names)
	if err != nil || kept.Leaf.SerialNumber.Cmp(renewed.Leaf.SerialNumber) != 0 {
		t.Fatalf("after renewal JoinProxy gives serial %x, %v; want %x", kept.Leaf.SerialNumber, err, renewed.Leaf.SerialNumber)
	}
}
