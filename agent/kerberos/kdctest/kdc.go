// Package kdctest starts a real MIT Kerberos KDC (krb5kdc with the PKINIT
// plugin) in a temporary directory for tests, configured the way an Active
// Directory domain controller behaves towards Tollgate: its own
// certificate names the KDC by host name (as a domain controller's
// "Kerberos Authentication" certificate does) and is issued by a separate
// CA (the domain's CA), and it trusts a given CA for PKINIT client
// certificates (the db-client CA, as NTAuth does; the KDC also trusts
// its own domain CA, which it needs to send its certificate chain).
// Principals and keytabs
// are made with kadmin.local.
package kdctest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
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
	"strconv"
	"strings"
	"testing"
	"time"
)

// KDC is a running MIT KDC.
type KDC struct {
	Realm string
	// HostName is the DNS name in the KDC's certificate; clients reach
	// the KDC at HostName:Port.
	HostName string
	Port     int
	// DomainCAFile holds the CA that issued the KDC's certificate (what
	// ad.ldap_cert names in Tollgate's configuration).
	DomainCAFile string
	// Dir is the KDC's directory; LogFile its log.
	Dir     string
	LogFile string

	env []string
	cmd *exec.Cmd
}

// Options configure Start.
type Options struct {
	// Realm defaults to TOLLGATE.TEST.
	Realm string
	// HostName defaults to localhost (it must resolve to 127.0.0.1).
	HostName string
	// ClientCAPEM is the CA the KDC trusts for PKINIT client
	// certificates. Required.
	ClientCAPEM []byte
}

// Binaries the KDC needs; a missing one fails the test.
var binaries = []string{"krb5kdc", "kdb5_util", "kadmin.local"}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed (apt-get install krb5-kdc krb5-admin-server krb5-pkinit krb5-user)", name)
}

// Start creates a realm with its database, starts krb5kdc on a free
// loopback port, and stops it when the test ends.
func Start(t testing.TB, o Options) *KDC {
	t.Helper()
	for _, b := range binaries {
		if _, err := lookPath(b); err != nil {
			t.Fatal(err)
		}
	}
	if m, _ := filepath.Glob("/usr/lib/*/krb5/plugins/preauth/pkinit.so"); len(m) == 0 {
		t.Fatal("the MIT PKINIT plugin is not installed: apt-get install krb5-pkinit")
	}
	if len(o.ClientCAPEM) == 0 {
		t.Fatal("kdctest: ClientCAPEM is required")
	}
	if o.Realm == "" {
		o.Realm = "TOLLGATE.TEST"
	}
	if o.HostName == "" {
		o.HostName = "localhost"
	}
	dir := t.TempDir()
	k := &KDC{Realm: o.Realm, HostName: o.HostName, Dir: dir, LogFile: filepath.Join(dir, "kdc.log")}
	path := func(n string) string { return filepath.Join(dir, n) }
	write := func(n string, b []byte) {
		if err := os.WriteFile(path(n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	caCert, caKey, err := newCA("Tollgate test domain CA")
	if err != nil {
		t.Fatal(err)
	}
	kdcCert, kdcKey, err := kdcCertificate(caCert, caKey, o.HostName)
	if err != nil {
		t.Fatal(err)
	}
	write("domain-ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw}))
	write("kdc.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kdcCert}))
	write("kdc.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(kdcKey)}))
	write("client-ca.crt", o.ClientCAPEM)
	k.DomainCAFile = path("domain-ca.crt")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()

	write("kdc.conf", fmt.Appendf(nil, `[kdcdefaults]
	kdc_ports = %[2]d
	kdc_tcp_ports = %[2]d
	kdc_listen = 127.0.0.1:%[2]d
	kdc_tcp_listen = 127.0.0.1:%[2]d
[realms]
	%[1]s = {
		database_name = %[3]s
		key_stash_file = %[4]s
		acl_file = %[5]s
		pkinit_identity = FILE:%[6]s,%[7]s
		pkinit_anchors = FILE:%[8]s
		pkinit_anchors = FILE:%[10]s
		max_life = 10h
	}
[logging]
	kdc = FILE:%[9]s
`, o.Realm, k.Port, path("principal"), path("stash"), path("kadm5.acl"), path("kdc.crt"), path("kdc.key"), path("client-ca.crt"), k.LogFile, path("domain-ca.crt")))
	write("kadm5.acl", nil)
	write("krb5.conf", fmt.Appendf(nil, "[libdefaults]\n\tdefault_realm = %s\n", o.Realm))
	k.env = append(os.Environ(),
		"KRB5_CONFIG="+path("krb5.conf"),
		"KRB5_KDC_PROFILE="+path("kdc.conf"),
	)
	if out, err := k.run("kdb5_util", "create", "-s", "-r", o.Realm, "-P", "master-password-for-test"); err != nil {
		t.Fatalf("kdb5_util create: %v\n%s", err, out)
	}
	kdcBin, _ := lookPath("krb5kdc")
	k.cmd = exec.Command(kdcBin, "-n", "-r", o.Realm)
	k.cmd.Env = k.env
	out, err := os.Create(path("krb5kdc.out"))
	if err != nil {
		t.Fatal(err)
	}
	k.cmd.Stdout, k.cmd.Stderr = out, out
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("start krb5kdc: %v", err)
	}
	t.Cleanup(func() {
		_ = k.cmd.Process.Kill()
		_ = k.cmd.Wait()
		out.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", k.Addr())
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("krb5kdc does not listen on %s:\n%s", k.Addr(), k.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return k
}

// Addr is where the KDC listens (TCP and UDP).
func (k *KDC) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.Port)) }

// KDCHostName is the value for ad.kdc_host_name: the certificate's host
// name with the KDC's port.
func (k *KDC) KDCHostName() string { return net.JoinHostPort(k.HostName, strconv.Itoa(k.Port)) }

// Logs returns the KDC's output and log.
func (k *KDC) Logs() string {
	var b strings.Builder
	for _, n := range []string{"krb5kdc.out", "kdc.log"} {
		c, _ := os.ReadFile(filepath.Join(k.Dir, n))
		fmt.Fprintf(&b, "--- %s\n%s", n, c)
	}
	return b.String()
}

func (k *KDC) run(name string, args ...string) (string, error) {
	bin, err := lookPath(name)
	if err != nil {
		return "", err
	}
	c := exec.Command(bin, args...)
	c.Env = k.env
	c.Stdin = strings.NewReader("")
	out, err := c.CombinedOutput()
	return string(out), err
}

// kadmin runs one kadmin.local query. kadmin.local exits 0 even when the
// query fails, so its output is checked for the "kadmin.local:" or
// "add_principal:" error prefixes too.
func (k *KDC) kadmin(t testing.TB, query string) string {
	t.Helper()
	out, err := k.run("kadmin.local", "-r", k.Realm, "-q", query)
	if err != nil || strings.Contains(out, "kadmin.local: ") || strings.Contains(out, "add_principal: ") || strings.Contains(out, " while ") {
		t.Fatalf("kadmin.local -q %q: %v\n%s", query, err, out)
	}
	return out
}

// AddPKINITUser adds a principal without keys that must pre-authenticate
// (it can log in with PKINIT only).
func (k *KDC) AddPKINITUser(t testing.TB, name string) {
	t.Helper()
	k.kadmin(t, "addprinc -nokey +requires_preauth "+name)
}

// AddUser adds a principal with random keys and returns a keytab file
// holding them.
func (k *KDC) AddUser(t testing.TB, name string) string {
	t.Helper()
	k.kadmin(t, "addprinc -randkey +requires_preauth "+name)
	return k.Keytab(t, name)
}

// AddService adds a service principal (e.g. MSSQLSvc/host:1433) with
// random keys and returns a keytab holding them, as an AD admin exports
// one with ktpass for a service account.
func (k *KDC) AddService(t testing.TB, spn string) string {
	t.Helper()
	k.kadmin(t, "addprinc -randkey "+spn)
	return k.Keytab(t, spn)
}

// Keytab exports a principal's keys (re-randomising them, as ktadd does)
// into a new keytab file.
func (k *KDC) Keytab(t testing.TB, principal string) string {
	t.Helper()
	name := strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(principal) + ".keytab"
	p := filepath.Join(k.Dir, name)
	_ = os.Remove(p)
	k.kadmin(t, "ktadd -k "+p+" "+principal)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("ktadd wrote no keytab for %s: %v", principal, err)
	}
	return p
}

func newCA(cn string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

// idPKINITKPKdc is the KDC's extended key usage (RFC 4556).
var idPKINITKPKdc = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 2, 3, 5}

// kdcCertificate is a domain controller's certificate: RSA, the KDC usage,
// and the host name as its only name (no id-pkinit-san), so clients must
// match it against pkinit_kdc_hostname.
func kdcCertificate(ca *x509.Certificate, caKey *ecdsa.PrivateKey, host string) ([]byte, *rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(2),
		Subject:            pkix.Name{CommonName: host},
		DNSNames:           []string{host},
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(24 * time.Hour),
		KeyUsage:           x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{idPKINITKPKdc},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	return der, key, err
}
