package ca

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPKINITWithMITKDC proves that a real MIT KDC (krb5kdc with the PKINIT
// plugin, default settings: no pkinit_cert_match rule, pkinit_eku_checking
// kpClientAuth) maps a db-client certificate made WithPKINIT to its
// principal, and refuses a plain db-client certificate (no PKINIT usage)
// and one whose SAN names another principal.
func TestPKINITWithMITKDC(t *testing.T) {
	for _, b := range []string{"krb5kdc", "kdb5_util", "kinit", "klist"} {
		if _, err := exec.LookPath(b); err != nil {
			if _, err := os.Stat(filepath.Join("/usr/sbin", b)); err != nil {
				t.Fatalf("%s is not installed: apt-get install krb5-kdc krb5-pkinit krb5-user", b)
			}
		}
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/krb5/plugins/preauth/pkinit.so"); err != nil {
		if m, _ := filepath.Glob("/usr/lib/*/krb5/plugins/preauth/pkinit.so"); len(m) == 0 {
			t.Fatal("the MIT PKINIT plugin is not installed: apt-get install krb5-pkinit")
		}
	}
	const realm = "TOLLGATE.TEST"
	a, _ := open(t)
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n) }
	write := func(n string, b []byte, mode os.FileMode) {
		if err := os.WriteFile(path(n), b, mode); err != nil {
			t.Fatal(err)
		}
	}

	// The KDC's own certificate, from a throwaway CA the clients trust.
	kdcCA, kdcCAKey := testCA(t, "KDC test CA")
	kdcKey := rsaKey(t)
	var sans sanBuilder
	sans.pkinit = []Principal{{Realm: realm, Components: []string{"krbtgt", realm}}}
	sanExt, _, err := sans.extension()
	if err != nil {
		t.Fatal(err)
	}
	kdcTmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(2),
		Subject:            pkix.Name{CommonName: "kdc"},
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(time.Hour),
		KeyUsage:           x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 2, 3, 5}}, // id-pkinit-KPKdc
		ExtraExtensions:    []pkix.Extension{sanExt},
	}
	kdcDER, err := x509.CreateCertificate(rand.Reader, kdcTmpl, kdcCA, kdcKey.Public(), kdcCAKey)
	if err != nil {
		t.Fatal(err)
	}
	write("kdc.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kdcDER}), 0o644)
	write("kdc.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(kdcKey)}), 0o600)
	write("kdc-ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kdcCA.Raw}), 0o644)
	dbClientCA, _ := a.CertPEM(DBClient)
	write("db-client-ca.crt", dbClientCA, 0o644)

	port := freePort(t)
	// The client trusts the KDC's CA, and needs the db-client CA too: MIT's
	// client verifies its own chain before sending it.
	write("krb5.conf", fmt.Appendf(nil, `[libdefaults]
	default_realm = %[1]s
	dns_lookup_kdc = false
	dns_lookup_realm = false
	udp_preference_limit = 1
[realms]
	%[1]s = {
		kdc = 127.0.0.1:%[2]d
		pkinit_anchors = FILE:%[3]s
		pkinit_anchors = FILE:%[4]s
	}
`, realm, port, path("kdc-ca.crt"), path("db-client-ca.crt")), 0o644)
	write("kdc.conf", fmt.Appendf(nil, `[kdcdefaults]
	kdc_ports = %[2]d
	kdc_tcp_listen = 127.0.0.1:%[2]d
	kdc_listen = 127.0.0.1:%[2]d
[realms]
	%[1]s = {
		database_name = %[3]s
		key_stash_file = %[4]s
		pkinit_identity = FILE:%[5]s,%[6]s
		pkinit_anchors = FILE:%[7]s
	}
[logging]
	kdc = FILE:%[8]s
`, realm, port, path("principal"), path("stash"), path("kdc.crt"), path("kdc.key"), path("db-client-ca.crt"), path("kdc.log")), 0o644)
	env := append(os.Environ(),
		"KRB5_CONFIG="+path("krb5.conf"),
		"KRB5_KDC_PROFILE="+path("kdc.conf"),
		"KRB5CCNAME=FILE:"+path("ccache"),
		"KRB5_TRACE="+path("trace.log"),
	)
	run := func(name string, args ...string) (string, error) {
		c := exec.Command(name, args...)
		c.Env = env
		c.Stdin = strings.NewReader("")
		out, err := c.CombinedOutput()
		return string(out), err
	}
	mustRun := func(name string, args ...string) {
		if out, err := run(name, args...); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	mustRun("kdb5_util", "create", "-s", "-r", realm, "-P", "master-password-for-test")
	// Keyless principals with requires_preauth (attribute 128; PKINIT
	// needs no long-term key), added with
	// kdb5_util's dump format so that kadmin (another package) is not needed.
	var dump strings.Builder
	dump.WriteString("kdb5_util load_dump version 7\n")
	for _, n := range []string{"alice@" + realm, "bob@" + realm} {
		fmt.Fprintf(&dump, "princ\t38\t%d\t0\t0\t0\t%s\t128\t86400\t0\t0\t0\t0\t0\t0\t-1;\n", len(n), n)
	}
	write("principals.dump", []byte(dump.String()), 0o600)
	mustRun("kdb5_util", "-r", realm, "load", "-update", path("principals.dump"))

	kdc := exec.Command("krb5kdc", "-n", "-r", realm)
	kdc.Env = env
	kdcOut, err := os.Create(path("krb5kdc.out"))
	if err != nil {
		t.Fatal(err)
	}
	kdc.Stdout, kdc.Stderr = kdcOut, kdcOut
	if err := kdc.Start(); err != nil {
		t.Fatalf("start krb5kdc: %v", err)
	}
	t.Cleanup(func() {
		_ = kdc.Process.Kill()
		_ = kdc.Wait()
		kdcOut.Close()
	})
	logs := func() string {
		var b strings.Builder
		for _, n := range []string{"krb5kdc.out", "kdc.log", "trace.log"} {
			c, _ := os.ReadFile(path(n))
			fmt.Fprintf(&b, "--- %s\n%s", n, c)
		}
		return b.String()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("krb5kdc does not listen on %d:\n%s", port, logs())
		}
		time.Sleep(50 * time.Millisecond)
	}

	kinit := func(name string, opts ...DBClientOption) (string, error) {
		key := rsaKey(t)
		_, certPEM, err := a.IssueDBClient(key.Public(), "alice", time.Hour, opts...)
		if err != nil {
			t.Fatal(err)
		}
		write(name+".crt", certPEM, 0o644)
		write(name+".key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
		_ = os.Remove(path("ccache"))
		return run("kinit", "-X", "X509_user_identity=FILE:"+path(name+".crt")+","+path(name+".key"), "alice@"+realm)
	}

	if out, err := kinit("alice", WithPKINIT("", realm), WithUPN("alice@tollgate.test")); err != nil {
		t.Fatalf("kinit with the PKINIT certificate: %v\n%s\n%s", err, out, logs())
	}
	out, err := run("klist")
	if err != nil || !strings.Contains(out, "Default principal: alice@"+realm) || !strings.Contains(out, "krbtgt/"+realm+"@"+realm) {
		t.Fatalf("klist after PKINIT: %v\n%s", err, out)
	}

	// A plain db-client certificate lacks the PKINIT usage and SAN; a
	// certificate whose SAN names bob does not log in as alice.
	if out, err := kinit("plain"); err == nil || !strings.Contains(out, "key purpose") {
		t.Fatalf("kinit as alice with a plain db-client certificate: %v\n%s", err, out)
	}
	out, err = kinit("bob", WithPKINIT("bob", realm))
	if err == nil || !strings.Contains(out, "Client name mismatch") {
		t.Fatalf("kinit as alice with bob's id-pkinit-san: %v\n%s", err, out)
	}
	kdcLog, _ := os.ReadFile(path("kdc.log"))
	if !strings.Contains(string(kdcLog), "alice@"+realm+" for krbtgt/"+realm+"@"+realm) {
		t.Fatalf("KDC log does not show alice's ticket:\n%s", kdcLog)
	}
}

func testCA(t *testing.T, cn string) (*x509.Certificate, any) {
	t.Helper()
	k := ecKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
