package kerberos_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/service"
	"github.com/jcmturner/gokrb5/v8/spnego"

	"github.com/tollgate-db/tollgate/agent/kerberos"
	"github.com/tollgate-db/tollgate/agent/kerberos/kdctest"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/config"
)

const spn = "MSSQLSvc/sql.tollgate.test:1433"

type env struct {
	kdc      *kdctest.KDC
	cas      *ca.Authorities
	caPEM    []byte
	svcKT    *keytab.Keytab
	bobKT    string
	domainCA string
}

// newEnv starts one KDC trusting the db-client CA, with a PKINIT user
// alice, a keytab user bob and the SQL Server's SPN.
func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	cas, err := ca.Open(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := cas.CertPEM(ca.DBClient)
	if err != nil {
		t.Fatal(err)
	}
	kdc := kdctest.Start(t, kdctest.Options{ClientCAPEM: caPEM})
	kdc.AddPKINITUser(t, "alice")
	bob := kdc.AddUser(t, "bob")
	svc := kdc.AddService(t, spn)
	kt, err := keytab.Load(svc)
	if err != nil {
		t.Fatal(err)
	}
	return &env{kdc: kdc, cas: cas, caPEM: caPEM, svcKT: kt, bobKT: bob, domainCA: kdc.DomainCAFile}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func (e *env) ad() config.AD {
	return config.AD{Domain: "tollgate.test", SPN: spn, KDCHostName: e.kdc.KDCHostName(), LDAPCert: e.domainCA}
}

func (e *env) options(t *testing.T) kerberos.Options {
	return kerberos.Options{Issue: e.cas.IssueDBClient, DBClientCA: e.caPEM, Dir: t.TempDir(), Logger: quiet()}
}

// recordingIssue wraps IssueDBClient to keep the certificates it signs.
func (e *env) recordingIssue(certs *[]*x509.Certificate) kerberos.IssueFunc {
	return func(pub crypto.PublicKey, dbUser string, ttl time.Duration, opts ...ca.DBClientOption) (*x509.Certificate, []byte, error) {
		c, p, err := e.cas.IssueDBClient(pub, dbUser, ttl, opts...)
		if err == nil {
			*certs = append(*certs, c)
		}
		return c, p, err
	}
}

// verify checks a client token the way SQL Server does: SPNEGO around a
// Kerberos AP-REQ that decrypts with the service's keytab. It returns the
// client principal.
func verify(t *testing.T, kt *keytab.Keytab, tok []byte) string {
	t.Helper()
	var st spnego.SPNEGOToken
	if err := st.Unmarshal(tok); err != nil {
		t.Fatalf("token is not SPNEGO: %v", err)
	}
	if !st.Init {
		t.Fatal("token is not a NegTokenInit")
	}
	var k5 spnego.KRB5Token
	if err := k5.Unmarshal(st.NegTokenInit.MechTokenBytes); err != nil {
		t.Fatalf("mech token: %v", err)
	}
	if !k5.IsAPReq() {
		t.Fatal("mech token is not an AP-REQ")
	}
	// MIT KDCs issue PACs without the logon information AD puts there.
	ok, creds, err := service.VerifyAPREQ(&k5.APReq, service.NewSettings(kt, service.DecodePAC(false)))
	if !ok || err != nil {
		t.Fatalf("AP-REQ does not verify with the service keytab: %v", err)
	}
	return creds.UserName() + "@" + creds.Domain()
}

func TestPKINITAndKeytab(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var certs []*x509.Certificate
	o := e.options(t)
	o.Issue = e.recordingIssue(&certs)
	p, err := kerberos.New(e.ad(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Method() != kerberos.MethodPKINIT || p.Realm() != "TOLLGATE.TEST" {
		t.Fatalf("method %s realm %s", p.Method(), p.Realm())
	}
	sc, err := p.InitSecContext(ctx, "alice")
	if err != nil {
		t.Fatalf("PKINIT: %v\n%s", err, e.kdc.Logs())
	}
	if got := verify(t, e.svcKT, sc.Token); got != "alice@TOLLGATE.TEST" {
		t.Fatalf("AP-REQ client %q", got)
	}
	// A second connection reuses the tickets but not the authenticator.
	sc2, err := p.InitSecContext(ctx, `TOLLGATE\alice`)
	if err != nil {
		t.Fatal(err)
	}
	if string(sc2.Token) == string(sc.Token) {
		t.Fatal("the same AP-REQ was sent twice")
	}
	// One short-lived certificate, carrying what Active Directory maps
	// and checks: UPN, Kerberos principal, smart-card logon usage, CRL.
	if len(certs) != 1 {
		t.Fatalf("%d certificates signed for two connections", len(certs))
	}
	c := certs[0]
	upns, _ := ca.UPNs(c)
	princs, _ := ca.PKINITPrincipals(c)
	if c.Subject.CommonName != "alice" || len(upns) != 1 || upns[0] != "alice@tollgate.test" || len(princs) != 1 || princs[0].String() != "alice@TOLLGATE.TEST" ||
		c.NotAfter.Sub(c.NotBefore) > 10*time.Minute || len(c.CRLDistributionPoints) != 1 ||
		c.CRLDistributionPoints[0] != "ldap:///CN=tollgate,CN=Tollgate,CN=CDP,CN=Public Key Services,CN=Services,CN=Configuration,DC=tollgate,DC=test?certificateRevocationList?base?objectClass=cRLDistributionPoint" {
		t.Fatalf("PKINIT certificate: CN %s, UPNs %v, principals %v, %s to %s, CRL %v", c.Subject.CommonName, upns, princs, c.NotBefore, c.NotAfter, c.CRLDistributionPoints)
	}
	verify(t, e.svcKT, sc2.Token)
	logs, _ := os.ReadFile(e.kdc.LogFile)
	if n := countLines(string(logs), "AS_REQ", "ISSUE"); n != 1 {
		t.Fatalf("%d AS requests for two connections, want 1 (tickets cached):\n%s", n, logs)
	}
	if !strings.Contains(string(logs), "alice@TOLLGATE.TEST for "+spn) {
		t.Fatalf("KDC log shows no service ticket for alice:\n%s", logs)
	}
	// The server accepting the context ends the exchange.
	acc := spnego.SPNEGOToken{Resp: true, NegTokenResp: spnego.NegTokenResp{NegState: 0}}
	b, _ := acc.Marshal()
	if next, err := sc.Continue(b); err != nil || next != nil || !sc.Done() {
		t.Fatalf("accept-completed: %v %v %v", next, err, sc.Done())
	}
	rej := spnego.SPNEGOToken{Resp: true, NegTokenResp: spnego.NegTokenResp{NegState: 2}}
	b, _ = rej.Marshal()
	if _, err := sc2.Continue(b); err == nil || !strings.Contains(err.Error(), "rejected") {
		t.Fatalf("reject: %v", err)
	}

	// Keytab login for bob, with gokrb5 talking to the KDC.
	ad := e.ad()
	ad.KeytabFile = e.bobKT
	kp, err := kerberos.New(ad, kerberos.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if kp.Method() != kerberos.MethodKeytab {
		t.Fatal(kp.Method())
	}
	ksc, err := kp.InitSecContext(ctx, "bob")
	if err != nil {
		t.Fatalf("keytab: %v\n%s", err, e.kdc.Logs())
	}
	if got := verify(t, e.svcKT, ksc.Token); got != "bob@TOLLGATE.TEST" {
		t.Fatalf("AP-REQ client %q", got)
	}
	// alice has no keys: the keytab of bob cannot log her in.
	if _, err := kp.InitSecContext(ctx, "alice"); err == nil {
		t.Fatal("keytab login as alice succeeded")
	}
}

// TestTroubleshooting checks that the failures the SQL Server guide's
// troubleshooting lists come back naming their cause.
func TestTroubleshooting(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cases := []struct {
		name string
		edit func(*config.AD, *kerberos.Options)
		want string
	}{
		{"wrong KDC host name", func(ad *config.AD, _ *kerberos.Options) {
			// The KDC answers, but its certificate names localhost.
			ad.KDCHostName = strings.Replace(ad.KDCHostName, "localhost", "127.0.0.1", 1)
		}, "does not name ad.kdc_host_name"},
		{"KDC unreachable", func(ad *config.AD, _ *kerberos.Options) {
			ad.KDCHostName = "localhost:1"
		}, "cannot reach the KDC"},
		{"KDC certificate not trusted", func(ad *config.AD, _ *kerberos.Options) {
			ad.LDAPCert = writeCA(t, "some other CA")
		}, "does not trust the KDC's certificate"},
		{"SPN not registered", func(ad *config.AD, _ *kerberos.Options) {
			ad.SPN = "MSSQLSvc/other.tollgate.test:1433"
		}, "is not registered in the domain"},
		{"no such account", func(*config.AD, *kerberos.Options) {}, "no account"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ad, o := e.ad(), e.options(t)
			c.edit(&ad, &o)
			p, err := kerberos.New(ad, o)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			user := "alice"
			if c.name == "no such account" {
				user = "mallory"
			}
			_, err = p.InitSecContext(ctx, user)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}

	// A KDC that does not trust the db-client CA (NTAuth not set up).
	other, err := ca.Open(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, _ := other.CertPEM(ca.DBClient)
	kdc2 := kdctest.Start(t, kdctest.Options{ClientCAPEM: otherPEM})
	kdc2.AddPKINITUser(t, "alice")
	ad := config.AD{Domain: "tollgate.test", SPN: spn, KDCHostName: kdc2.KDCHostName(), LDAPCert: kdc2.DomainCAFile}
	p, err := kerberos.New(ad, e.options(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = p.InitSecContext(ctx, "alice")
	if err == nil || !strings.Contains(err.Error(), "the KDC does not trust the db-client CA") {
		t.Fatalf("KDC without the db-client CA: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	cas, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ad   config.AD
		want string
	}{
		{config.AD{SPN: spn, KDCHostName: "dc"}, "ad.domain is required"},
		{config.AD{Domain: "d", KDCHostName: "dc"}, "ad.spn is required"},
		{config.AD{Domain: "d", SPN: spn}, "ad.kdc_host_name is required"},
		{config.AD{Domain: "d", SPN: spn, KDCHostName: "dc"}, "ad.ldap_cert is required"},
		{config.AD{Domain: "d", SPN: spn, KDCHostName: "dc", KeytabFile: "/nonexistent"}, "ad.keytab_file"},
	} {
		_, err := kerberos.New(c.ad, kerberos.Options{Issue: cas.IssueDBClient, DBClientCA: []byte("x")})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.ad, err, c.want)
		}
	}
}

// writeCA writes a CA certificate that signed nothing here.
func writeCA(t *testing.T, name string) string {
	t.Helper()
	cas, err := ca.Open(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	pem, err := cas.CertPEM(ca.DB)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func countLines(s string, subs ...string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		all := true
		for _, sub := range subs {
			all = all && strings.Contains(l, sub)
		}
		if all {
			n++
		}
	}
	return n
}
