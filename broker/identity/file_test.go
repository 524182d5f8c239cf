package identity_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
)

func issueFile(t *testing.T, a *ca.Authorities, ttl time.Duration) (*identity.File, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := identity.Identity{User: "bot", Roles: []string{"access"}, Traits: map[string][]string{identity.TraitDBUsers: {"app"}}}
	cert, _, err := a.IssueUser(key.Public(), id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	userCA, _ := a.Cert(ca.User)
	hostCA, _ := a.Cert(ca.Host)
	f, err := identity.NewFile("proxy.example.com:3080", key, cert, []*x509.Certificate{userCA, hostCA})
	if err != nil {
		t.Fatal(err)
	}
	return f, key
}

func TestIdentityFileRoundTrip(t *testing.T) {
	a, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, _ := issueFile(t, a, time.Hour)
	path := filepath.Join(t.TempDir(), "bot.identity")
	if err := identity.WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file mode %04o, want 0600", fi.Mode().Perm())
	}
	g, err := identity.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if g.ProxyAddr != "proxy.example.com:3080" {
		t.Fatalf("proxy %q", g.ProxyAddr)
	}
	if !reflect.DeepEqual(g.Identity, f.Identity) {
		t.Fatalf("identity %+v, want %+v", g.Identity, f.Identity)
	}
	if len(g.CACerts) != 2 || !bytes.Equal(g.Cert.Leaf.Raw, f.Cert.Leaf.Raw) {
		t.Fatalf("certificates not kept")
	}
	// The loaded pair works as a TLS client certificate accepted by a
	// server trusting the user CA, and the pool verifies a host certificate.
	userPool, _ := a.Pool(ca.User)
	if _, err := g.Cert.Leaf.Verify(x509.VerifyOptions{Roots: userPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	hk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hc, _, err := a.IssueHost(hk.Public(), "proxy", []string{"proxy.example.com"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hc.Verify(x509.VerifyOptions{Roots: g.CAs, DNSName: "proxy.example.com"}); err != nil {
		t.Fatalf("host certificate against the file's CA pool: %v", err)
	}
	// The user certificate must not pass as a server against the same pool.
	if _, err := g.Cert.Leaf.Verify(x509.VerifyOptions{Roots: g.CAs}); err == nil {
		t.Fatal("user certificate verified for server authentication")
	}
	// A real TLS handshake: the server trusts the user CA and requires a
	// client certificate; the client trusts the file's pool.
	hostTLS := tls.Certificate{Certificate: [][]byte{hc.Raw}, PrivateKey: hk}
	cConn, sConn := net.Pipe()
	defer cConn.Close()
	defer sConn.Close()
	errc := make(chan error, 1)
	go func() {
		s := tls.Server(sConn, &tls.Config{Certificates: []tls.Certificate{hostTLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: userPool})
		err := s.Handshake()
		if err == nil && s.ConnectionState().PeerCertificates[0].Subject.CommonName != "bot" {
			err = fmt.Errorf("server saw %q", s.ConnectionState().PeerCertificates[0].Subject.CommonName)
		}
		errc <- err
	}()
	c := tls.Client(cConn, &tls.Config{Certificates: []tls.Certificate{g.Cert}, RootCAs: g.CAs, ServerName: "proxy.example.com"})
	if err := c.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

func TestIdentityFileRefuses(t *testing.T) {
	a, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, _ := issueFile(t, a, time.Hour)
	good, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wrongKey, err := (&identity.File{ProxyAddr: f.ProxyAddr, Cert: tls.Certificate{PrivateKey: other, Leaf: f.Cert.Leaf}, CACerts: f.CACerts, Identity: f.Identity}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	otherCA, _ := b.Cert(ca.User)
	foreign, err := (&identity.File{ProxyAddr: f.ProxyAddr, Cert: f.Cert, CACerts: []*x509.Certificate{otherCA}, Identity: f.Identity}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no PEM block"},
		{"no version", bytes.Replace(good, []byte("Tollgate-Identity: 1\n"), nil, 1), "no Tollgate-Identity header"},
		{"future version", bytes.Replace(good, []byte("Tollgate-Identity: 1"), []byte("Tollgate-Identity: 9"), 1), `format version "9"`},
		{"bad header", bytes.Replace(good, []byte("User: "), []byte("User "), 1), "header line"},
		{"user differs", bytes.Replace(good, []byte("User: bot"), []byte("User: root"), 1), `header says user "root"`},
		{"wrong key", wrongKey, "private key does not match"},
		{"foreign CA", foreign, "does not verify against the file's CAs"},
		{"no key", dropBlock(good, "PRIVATE KEY"), "no private key"},
		{"garbage block", append(append([]byte{}, good...), "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"...), "malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := identity.ParseFile(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestIdentityFileExpired(t *testing.T) {
	a, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// One nanosecond of validity after a backdated start: expired at once.
	f, _ := issueFile(t, a, time.Nanosecond)
	path := filepath.Join(t.TempDir(), "id")
	if err := identity.WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.LoadFile(path); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("expired identity file: got %v", err)
	}
	// Parsing alone still works, so the file can be inspected.
	data, _ := os.ReadFile(path)
	if _, err := identity.ParseFile(data); err != nil {
		t.Fatal(err)
	}
}

func dropBlock(data []byte, typ string) []byte {
	begin := []byte("-----BEGIN " + typ + "-----")
	end := []byte("-----END " + typ + "-----\n")
	i := bytes.Index(data, begin)
	j := bytes.Index(data, end)
	return append(append([]byte{}, data[:i]...), data[j+len(end):]...)
}

func FuzzParseFile(f *testing.F) {
	a, err := ca.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, _, err := a.IssueUser(key.Public(), identity.Identity{User: "u", Roles: []string{"r"}}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	userCA, _ := a.Cert(ca.User)
	file, err := identity.NewFile("p:1", key, cert, []*x509.Certificate{userCA})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := file.Marshal()
	f.Add(good)
	f.Add([]byte("Tollgate-Identity: 1\n-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("# c\nx: y\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := identity.ParseFile(b)
		if err != nil {
			return
		}
		if g.Cert.Leaf == nil || g.Identity.User == "" {
			t.Fatalf("accepted a file without a user certificate")
		}
	})
}
