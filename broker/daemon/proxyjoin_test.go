package daemon_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/presence"
)

// A proxy token issues the proxies' host id and nothing else, a db token
// never issues it, and a proxy's certificate registers no database.
func TestProxyJoin(t *testing.T) {
	b := startBroker(t, login.Options{})
	ctx := ctxT(t)
	token := func(typ string) string {
		tok, err := b.Admin.As(admin, "").AddToken(ctx, api.AddTokenRequest{Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Value
	}
	k := newKey(t)
	_, err := b.client(t, nil).Join(ctx, api.JoinRequest{Token: token("db"), HostID: ca.ProxyHostID, PublicKey: pubPEM(t, k)})
	if statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "a token of type db cannot join a host of type proxy") {
		t.Fatalf("a db token for the proxies' host id: %v", err)
	}
	proxyToken := token("proxy")
	_, err = b.client(t, nil).Join(ctx, api.JoinRequest{Token: proxyToken, HostID: "agent-1", PublicKey: pubPEM(t, k)})
	if statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "a token of type proxy cannot join a host of type db") {
		t.Fatalf("a proxy token for an agent: %v", err)
	}
	// The refusal left the single-use token usable.
	res, err := b.client(t, nil).Join(ctx, api.JoinRequest{Token: proxyToken, HostID: ca.ProxyHostID, Hosts: []string{"proxy2.example.test"}, PublicKey: pubPEM(t, k)})
	if err != nil {
		t.Fatalf("a proxy joining: %v", err)
	}
	leaf, err := api.ParseCertificatePEM([]byte(res.CertPEM))
	if err != nil || leaf.Subject.CommonName != ca.ProxyHostID || leaf.VerifyHostname("proxy2.example.test") != nil {
		t.Fatalf("the proxy's certificate: %v %+v", err, leaf)
	}
	pc := b.client(t, &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: k, Leaf: leaf})
	_, err = pc.AgentRegister(ctx, api.RegisterRequest{Databases: []api.RegisterDatabase{{Name: "pg-p", Protocol: "postgres", URI: "db:5432"}}})
	if statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "proxies serve no database") {
		t.Fatalf("a proxy registering a database: %v", err)
	}
	if _, err := pc.AgentDBClient(ctx, api.DBClientRequest{Database: "pg-p", DBUser: "postgres", PublicKey: pubPEM(t, k)}); statusOf(err) != http.StatusForbidden {
		t.Fatalf("a proxy asking for a db-client certificate: %v", err)
	}
}

// A client that reached the API through a proxy without the broker, by
// that proxy's name, gets a certificate for the name once the proxy is in
// presence; a name no proxy announced gets the broker's own.
func TestAPICertificateForProxyNames(t *testing.T) {
	b := startBroker(t, login.Options{})
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	roots := x509.NewCertPool()
	hostCA, err := b.CAs.Cert(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	roots.AddCert(hostCA)
	dial := func(name string) error {
		c, err := tls.Dial("tcp", b.Addr, &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"http/1.1"}})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial("proxy2.example.test"); err == nil || !strings.Contains(err.Error(), "proxy2.example.test") {
		t.Fatalf("a name no proxy announced: %v", err)
	}
	ann := presence.NewAnnouncer(b.PresenceKV, "proxy2-1", "proxy2.example.test:3080", 0, nil)
	go ann.Run(ctx)
	for !slices.ContainsFunc(b.Presence.Proxies(), func(p presence.Proxy) bool { return p.ID == "proxy2-1" }) {
		if ctx.Err() != nil {
			t.Fatal("the proxy never showed in presence")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := dial("proxy2.example.test"); err != nil {
		t.Fatalf("a proxy's name in presence: %v", err)
	}
	if err := dial("other.example.test"); err == nil {
		t.Fatal("a name no proxy announced got a certificate")
	}
	if err := dial("localhost"); err != nil {
		t.Fatalf("the broker's own name: %v", err)
	}
}
