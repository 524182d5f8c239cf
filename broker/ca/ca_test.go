package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/identity"
)

func open(t testing.TB) (*Authorities, string) {
	t.Helper()
	dir := t.TempDir()
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return a, dir
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemCert(t testing.TB, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// verifyChain checks c against the CA of typ for exactly the usages given,
// and that it fails for the usage it must not have.
func verifyChain(t *testing.T, a *Authorities, typ Type, c *x509.Certificate, dnsName string, want []x509.ExtKeyUsage) {
	t.Helper()
	pool, err := a.Pool(typ)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: dnsName, KeyUsages: []x509.ExtKeyUsage{u}})
		if slices.Contains(want, u) && err != nil {
			t.Errorf("%s certificate %q: usage %d: %v", typ, c.Subject.CommonName, u, err)
		}
		if !slices.Contains(want, u) && err == nil {
			t.Errorf("%s certificate %q verified for usage %d it must not have", typ, c.Subject.CommonName, u)
		}
	}
	// And never against another CA of the same data dir.
	for _, other := range Types {
		if other == typ {
			continue
		}
		p, _ := a.Pool(other)
		if _, err := c.Verify(x509.VerifyOptions{Roots: p, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
			t.Errorf("%s certificate verified against the %s CA", typ, other)
		}
	}
}

func TestOpenCreatesAndReloads(t *testing.T) {
	a, dir := open(t)
	fi, err := os.Stat(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("ca dir mode %04o, want 0700", fi.Mode().Perm())
	}
	for _, typ := range Types {
		kfi, err := os.Stat(filepath.Join(dir, "ca", string(typ)+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if kfi.Mode().Perm() != 0o600 {
			t.Errorf("%s key mode %04o, want 0600", typ, kfi.Mode().Perm())
		}
		c, _ := a.Cert(typ)
		if !c.IsCA || c.Subject.CommonName != "Tollgate "+string(typ)+" CA" {
			t.Errorf("%s CA: IsCA %v CN %q", typ, c.IsCA, c.Subject.CommonName)
		}
		if c.KeyUsage&x509.KeyUsageCRLSign == 0 || c.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("%s CA key usage %b", typ, c.KeyUsage)
		}
		switch c.PublicKey.(type) {
		case *rsa.PublicKey:
			if !typ.rsa() {
				t.Errorf("%s CA is RSA, want ECDSA", typ)
			}
		case *ecdsa.PublicKey:
			if typ.rsa() {
				t.Errorf("%s CA is ECDSA, want RSA", typ)
			}
		}
	}
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range Types {
		x, _ := a.Cert(typ)
		y, _ := b.Cert(typ)
		if !bytes.Equal(x.Raw, y.Raw) {
			t.Errorf("%s CA changed on reopen", typ)
		}
	}
	// What the reopened authorities sign verifies against the first ones.
	c, _, err := b.IssueUser(ecKey(t).Public(), identity.Identity{User: "u"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.VerifyUser([]*x509.Certificate{c}); err != nil {
		t.Fatal(err)
	}
}

func TestOpenConcurrentFirstUse(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	res := make([]*Authorities, 4)
	errs := make([]error, 4)
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = Open(dir)
		}()
	}
	wg.Wait()
	for i := range res {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		for _, typ := range Types {
			x, _ := res[0].Cert(typ)
			y, _ := res[i].Cert(typ)
			if !bytes.Equal(x.Raw, y.Raw) {
				t.Fatalf("concurrent first Opens created two %s CAs", typ)
			}
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	_, dir := open(t)
	key := filepath.Join(dir, "ca", "db-client.key")
	crt := filepath.Join(dir, "ca", "db-client.crt")

	for _, mode := range []os.FileMode{0o640, 0o604, 0o700, 0o666} {
		if err := os.Chmod(key, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir)
		if err == nil || !strings.Contains(err.Error(), "wider than 0600") || !strings.Contains(err.Error(), "db-client.key") {
			t.Errorf("key mode %04o: got %v", mode, err)
		}
	}
	if err := os.Chmod(key, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err != nil {
		t.Errorf("key mode 0400 (narrower) refused: %v", err)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}

	// A certificate without its key must not be replaced by a new CA.
	saved, _ := os.ReadFile(key)
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "key") || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing key: got %v", err)
	}
	if _, err := os.Stat(key); err == nil {
		t.Error("a new key was created beside an old certificate")
	}
	if err := os.WriteFile(key, saved, 0o600); err != nil {
		t.Fatal(err)
	}

	// A key that is not the certificate's.
	_, other := open(t)
	otherKey, _ := os.ReadFile(filepath.Join(other, "ca", "db-client.key"))
	if err := os.WriteFile(key, otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: got %v", err)
	}
	if err := os.WriteFile(key, saved, 0o600); err != nil {
		t.Fatal(err)
	}

	// Certificate missing.
	if err := os.Rename(crt, crt+".bak"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("missing certificate: got %v", err)
	}
	if err := os.Rename(crt+".bak", crt); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err != nil {
		t.Fatalf("restored files: %v", err)
	}
	if _, err := Open(""); err == nil {
		t.Error("empty data dir accepted")
	}
}

func TestIssueUser(t *testing.T) {
	a, _ := open(t)
	id := identity.Identity{
		User:           "alice",
		Roles:          []string{"access", "reviewer"},
		Traits:         map[string][]string{identity.TraitDBUsers: {"alice", "ro"}, identity.TraitDBNames: {"*"}},
		AccessRequests: []string{"req-1"},
	}
	before := time.Now()
	c, p, err := a.IssueUser(ecKey(t).Public(), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pemCert(t, p).Raw, c.Raw) {
		t.Fatal("PEM and certificate differ")
	}
	if c.Subject.CommonName != "alice" {
		t.Fatalf("CN %q", c.Subject.CommonName)
	}
	if d := c.NotAfter.Sub(before); d < DefaultUserTTL-2*time.Second || d > DefaultUserTTL+time.Second {
		t.Fatalf("default lifetime %s, want %s", d, DefaultUserTTL)
	}
	verifyChain(t, a, User, c, "", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	got, err := a.VerifyUser([]*x509.Certificate{c})
	if err != nil {
		t.Fatal(err)
	}
	id.Expires, id.Issued = c.NotAfter, c.NotBefore
	if !reflect.DeepEqual(got, id) {
		t.Fatalf("identity through the certificate:\n got %+v\nwant %+v", got, id)
	}
	// An RSA client key works too and gets KeyEncipherment.
	rc, _, err := a.IssueUser(rsaKey(t).Public(), identity.Identity{User: "bob"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if rc.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		t.Error("RSA user certificate without KeyEncipherment")
	}
	if _, _, err := a.IssueUser(ecKey(t).Public(), identity.Identity{}, 0); err == nil {
		t.Error("identity without user accepted")
	}
	if _, _, err := a.IssueUser(ecKey(t).Public(), id, -time.Hour); err == nil {
		t.Error("negative ttl accepted")
	}
	if _, _, err := a.IssueUser(nil, id, 0); err == nil {
		t.Error("nil public key accepted")
	}
}

func TestVerifyUserRefuses(t *testing.T) {
	a, _ := open(t)
	other, _ := open(t)
	id := identity.Identity{User: "alice", Roles: []string{"access"}}
	key := ecKey(t)

	expired, _, err := a.IssueUser(key.Public(), id, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, err := other.IssueUser(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	good, _, err := a.IssueUser(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Tampered: "access" becomes "admins" in the signed identity extension.
	raw := bytes.Replace(bytes.Clone(good.Raw), []byte(`"access"`), []byte(`"admins"`), 1)
	if bytes.Equal(raw, good.Raw) {
		t.Fatal("tamper target not found")
	}
	tampered, err := x509.ParseCertificate(raw)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := identity.FromCertificate(tampered); err != nil || id.Roles[0] != "admins" {
		t.Fatalf("tampered certificate does not carry the altered role: %v %v", id, err)
	}
	hostCert, _, err := a.IssueHost(key.Public(), "agent-1", []string{"agent.local"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dbClient, _, err := a.IssueDBClient(key.Public(), "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		certs []*x509.Certificate
		want  string
	}{
		{"none", nil, "none presented"},
		{"expired", []*x509.Certificate{expired}, "expired at"},
		{"other cluster's CA", []*x509.Certificate{foreign}, "not by this cluster's Tollgate user CA"},
		{"tampered", []*x509.Certificate{tampered}, "altered"},
		{"host CA", []*x509.Certificate{hostCert}, `issued by "CN=Tollgate host CA`},
		{"db-client CA", []*x509.Certificate{dbClient}, `issued by "CN=Tollgate db-client CA`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.VerifyUser(tc.certs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
	if _, err := a.VerifyUser([]*x509.Certificate{good}); err != nil {
		t.Fatalf("good certificate refused: %v", err)
	}
	// The host verifier refuses a user certificate the same way.
	if _, err := a.VerifyHost([]*x509.Certificate{good}, x509.ExtKeyUsageServerAuth); err == nil || !strings.Contains(err.Error(), "not by this cluster's Tollgate host CA") {
		t.Fatalf("user certificate as host: %v", err)
	}
	if h, err := a.VerifyHost([]*x509.Certificate{hostCert}, x509.ExtKeyUsageServerAuth); err != nil || h != "agent-1" {
		t.Fatalf("host certificate: %q %v", h, err)
	}
}

func TestIssueHost(t *testing.T) {
	a, _ := open(t)
	c, p, err := a.IssueHost(ecKey(t).Public(), "agent-7", []string{"agent7.internal", "127.0.0.1", "::1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pemCert(t, p).Raw, c.Raw) || c.Subject.CommonName != "agent-7" {
		t.Fatalf("CN %q", c.Subject.CommonName)
	}
	if len(c.IPAddresses) != 2 || !slices.Equal(c.DNSNames, []string{"agent7.internal"}) {
		t.Fatalf("SANs DNS %v IP %v", c.DNSNames, c.IPAddresses)
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	verifyChain(t, a, Host, c, "agent7.internal", both)
	verifyChain(t, a, Host, c, "127.0.0.1", both)
	if _, _, err := a.IssueHost(ecKey(t).Public(), "", nil, 0); err == nil {
		t.Error("empty host id accepted")
	}
}

func TestIssueDBServer(t *testing.T) {
	a, _ := open(t)
	certPEM, keyPEM, casPEM, err := a.IssueDBServer([]string{"db.example.com", "127.0.0.1"}, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := pemCert(t, certPEM)
	if c.Subject.CommonName != "db.example.com" {
		t.Fatalf("CN %q", c.Subject.CommonName)
	}
	if _, ok := c.PublicKey.(*rsa.PublicKey); !ok {
		t.Fatalf("server key %T, want RSA", c.PublicKey)
	}
	verifyChain(t, a, DB, c, "db.example.com", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	verifyChain(t, a, DB, c, "127.0.0.1", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("key does not match certificate: %v", err)
	}
	if blk, _ := pem.Decode(keyPEM); blk.Type != "RSA PRIVATE KEY" {
		t.Fatalf("key PEM type %q", blk.Type)
	}
	clientCA, _ := a.CertPEM(DBClient)
	if !bytes.Equal(casPEM, clientCA) {
		t.Fatal("casPEM is not the db-client CA")
	}
	if _, _, _, err := a.IssueDBServer(nil, 0); err == nil {
		t.Error("no hosts accepted")
	}
	if _, _, _, err := a.IssueDBServer([]string{"ok", ""}, 0); err == nil {
		t.Error("empty host accepted")
	}
}

func TestWriteFiles(t *testing.T) {
	a, _ := open(t)
	out := t.TempDir()
	paths, err := a.WriteDBFiles(filepath.Join(out, "server"), []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 {
		t.Fatalf("paths %v", paths)
	}
	fi, _ := os.Stat(filepath.Join(out, "server.key"))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("server.key mode %04o", fi.Mode().Perm())
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(out, "server.crt"), filepath.Join(out, "server.key")); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(out, "crdb")
	if _, err := a.WriteCockroachFiles(dir, []string{"crdb1.internal", "10.1.2.3"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	node := pemCert(t, read("node.crt"))
	if node.Subject.CommonName != "node" || !slices.Equal(node.DNSNames, []string{"node", "crdb1.internal"}) || len(node.IPAddresses) != 1 {
		t.Fatalf("node cert CN %q DNS %v IP %v", node.Subject.CommonName, node.DNSNames, node.IPAddresses)
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	verifyChain(t, a, DB, node, "crdb1.internal", both)
	dbCA, _ := a.CertPEM(DB)
	clientCA, _ := a.CertPEM(DBClient)
	if !bytes.Equal(read("ca.crt"), dbCA) || !bytes.Equal(read("ca-client.crt"), clientCA) {
		t.Fatal("ca.crt / ca-client.crt are not the db / db-client CAs")
	}
	fi, _ = os.Stat(filepath.Join(dir, "node.key"))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("node.key mode %04o", fi.Mode().Perm())
	}
	if _, err := tls.X509KeyPair(read("node.crt"), read("node.key")); err != nil {
		t.Fatal(err)
	}
}

func TestIssueDBClient(t *testing.T) {
	a, _ := open(t)
	key := rsaKey(t)
	c, p, err := a.IssueDBClient(key.Public(), "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pemCert(t, p).Raw, c.Raw) {
		t.Fatal("PEM and certificate differ")
	}
	if c.Subject.String() != "CN=alice" {
		t.Fatalf("subject %q, want exactly CN=alice", c.Subject.String())
	}
	if d := time.Until(c.NotAfter); d > DefaultDBClientTTL || d < DefaultDBClientTTL-time.Minute {
		t.Fatalf("default lifetime %s", d)
	}
	verifyChain(t, a, DBClient, c, "", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	if len(c.Extensions) == 0 || len(c.UnknownExtKeyUsage) != 0 {
		t.Fatalf("plain db-client cert has unexpected usages %v", c.UnknownExtKeyUsage)
	}
	for _, e := range c.Extensions {
		if e.Id.Equal(OIDSubjectAltName) {
			t.Fatal("plain db-client cert has a SAN")
		}
	}

	k, _, err := a.IssueDBClient(key.Public(), "alice", time.Hour,
		WithUPN("alice@example.com"), WithPKINIT("", "EXAMPLE.COM"), WithPKINIT("svc/db1.example.com", "EXAMPLE.COM"),
		WithCRLDistributionPoints("ldap:///CN=tollgate,CN=CDP,CN=Public%20Key%20Services,CN=Services,CN=Configuration,DC=example,DC=com?certificateRevocationList?base?objectClass=cRLDistributionPoint"))
	if err != nil {
		t.Fatal(err)
	}
	verifyChain(t, a, DBClient, k, "", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	ps, err := PKINITPrincipals(k)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].String() != "alice@EXAMPLE.COM" || ps[1].String() != "svc/db1.example.com@EXAMPLE.COM" {
		t.Fatalf("PKINIT principals %v", ps)
	}
	upns, err := UPNs(k)
	if err != nil || !slices.Equal(upns, []string{"alice@example.com"}) {
		t.Fatalf("UPNs %v %v", upns, err)
	}
	if !slices.ContainsFunc(k.UnknownExtKeyUsage, oidKPPKINITClientAuth.Equal) || !slices.ContainsFunc(k.UnknownExtKeyUsage, oidKPMSSmartcardLogin.Equal) {
		t.Fatalf("PKINIT usages missing: %v", k.UnknownExtKeyUsage)
	}
	if len(k.CRLDistributionPoints) != 1 {
		t.Fatalf("CRL distribution points %v", k.CRLDistributionPoints)
	}

	// OpenSSL's view of the same certificate.
	text := opensslText(t, "x509", k.Raw)
	for _, want := range []string{
		"Subject: CN = alice",
		"TLS Web Client Authentication",
		"PKINIT Client Auth",         // id-pkinit-KPClientAuth
		"Microsoft Smartcard Login",  // AD's usage
		"UPN::alice@example.com",     // msUPN otherName
		"othername: 1.3.6.1.5.2.2::", // id-pkinit-san
		"X509v3 Subject Alternative Name",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("openssl x509 -text lacks %q:\n%s", want, text)
		}
	}
	// OpenSSL prints the PKINIT SAN as an otherName of type 1.3.6.1.5.2.2
	// without its value (it has no printer for KRB5PrincipalName), so its
	// DER is checked with asn1parse below.
	parse := opensslASN1Parse(t, k)
	if n := strings.Count(parse, "prim: GENERALSTRING"); n != 5 {
		t.Errorf("openssl asn1parse finds %d GeneralStrings in the SAN, want 5 (2 realms, alice, svc, db1.example.com):\n%s", n, parse)
	}
	// -dump prints each GeneralString's bytes with their text at the right.
	for _, want := range []string{":1.3.6.1.5.2.2", "EXAMPLE.COM", "alice", "svc", "db1.example.com", "INTEGER           :01"} {
		if !strings.Contains(parse, want) {
			t.Errorf("openssl asn1parse of the SAN lacks %q:\n%s", want, parse)
		}
	}

	for _, bad := range []DBClientOption{
		WithUPN("no-domain"), WithUPN(""), WithPKINIT("alice@EXAMPLE.COM", "EXAMPLE.COM"),
		WithPKINIT("alice", ""), WithPKINIT("al ice", "EXAMPLE.COM"), WithPKINIT("alice", "EX@MPLE"),
	} {
		if _, _, err := a.IssueDBClient(key.Public(), "alice", 0, bad); err == nil {
			t.Error("bad Kerberos option accepted")
		}
	}
	if _, _, err := a.IssueDBClient(key.Public(), "", 0); err == nil {
		t.Error("empty db user accepted")
	}
}

func opensslText(t *testing.T, kind string, der []byte) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is not installed (apt-get install openssl)")
	}
	f := filepath.Join(t.TempDir(), "obj.der")
	if err := os.WriteFile(f, der, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", kind, "-inform", "DER", "-in", f, "-noout", "-text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s -inform DER refused it: %v\n%s", kind, err, out)
	}
	return string(out)
}

// opensslASN1Parse dumps the subjectAltName extension value of c.
func opensslASN1Parse(t *testing.T, c *x509.Certificate) string {
	t.Helper()
	var val []byte
	for _, e := range c.Extensions {
		if e.Id.Equal(OIDSubjectAltName) {
			val = e.Value
		}
	}
	f := filepath.Join(t.TempDir(), "san.der")
	if err := os.WriteFile(f, val, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "asn1parse", "-inform", "DER", "-dump", "-in", f).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl asn1parse: %v\n%s", err, out)
	}
	return string(out)
}

func TestExport(t *testing.T) {
	a, _ := open(t)
	for _, kind := range []string{"user", "host", "db", "db-client", "db_client"} {
		b, err := a.Export(kind)
		if err != nil {
			t.Fatal(err)
		}
		typ, _ := ParseType(kind)
		c, _ := a.Cert(typ)
		if !bytes.Equal(pemCert(t, b).Raw, c.Raw) {
			t.Errorf("export %s is not the %s CA", kind, typ)
		}
	}
	der, err := a.Export("db-client-der")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := a.Cert(DBClient)
	if !bytes.Equal(der, c.Raw) {
		t.Fatal("db-client-der is not the db-client CA in DER")
	}
	if _, err := a.Export("tls"); err == nil || !strings.Contains(err.Error(), `"tls"`) {
		t.Fatalf("unknown export type: %v", err)
	}
}

// TestHandshakeWithDBClient runs a TLS handshake where a server trusting the
// db-client CA and presenting a db CA certificate meets a client with a
// db-client certificate: what every database/agent pair does.
func TestHandshakeWithDBClient(t *testing.T) {
	a, _ := open(t)
	certPEM, keyPEM, casPEM, err := a.IssueDBServer([]string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AppendCertsFromPEM(casPEM)
	key := ecKey(t)
	cc, _, err := a.IssueDBClient(key.Public(), "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dbPool, _ := a.Pool(DB)
	cConn, sConn := net.Pipe()
	defer cConn.Close()
	defer sConn.Close()
	got := make(chan string, 1)
	go func() {
		s := tls.Server(sConn, &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCAs})
		if err := s.Handshake(); err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- s.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	cl := tls.Client(cConn, &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{cc.Raw}, PrivateKey: crypto.Signer(key)}},
		RootCAs:      dbPool, ServerName: "localhost",
	})
	if err := cl.Handshake(); err != nil {
		t.Fatal(err)
	}
	if cn := <-got; cn != "alice" {
		t.Fatalf("server saw %q", cn)
	}
}

func BenchmarkIssueUser(b *testing.B) {
	a, _ := open(b)
	key := ecKey(b)
	id := identity.Identity{User: "alice", Roles: []string{"access"}, Traits: map[string][]string{identity.TraitDBUsers: {"alice"}, identity.TraitDBNames: {"*"}}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := a.IssueUser(key.Public(), id, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}
