package harness

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a test certificate authority. Tests use it where Tollgate's own
// authorities (broker/ca) are not involved; servers can equally be given an
// outside CA through their options.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
}

// KeyPair is an issued certificate with its private key, in parsed and PEM
// form.
type KeyPair struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte // PKCS #8
}

// NewCA makes a self-signed ECDSA P-256 CA valid for a day.
func NewCA(t testing.TB, commonName string) *CA {
	t.Helper()
	ca, err := newCA(commonName)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func newCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("harness: CA key: %w", err)
	}
	tmpl, err := template(commonName)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("harness: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("harness: CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// LoadCA makes a CA from PEM: a certificate and its private key (PKCS #8,
// SEC 1 or PKCS #1), for tests that issue certificates under an authority
// made elsewhere.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("harness: load CA: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("harness: load CA: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("harness: load CA: certificate %q is not a CA", cert.Subject)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("harness: load CA: key cannot sign")
	}
	return &CA{Cert: cert, Key: signer, CertPEM: pemBlock("CERTIFICATE", cert.Raw)}, nil
}

// IssueServer issues a server certificate for hosts (DNS names or IP
// addresses); with none, for localhost and 127.0.0.1.
func (ca *CA) IssueServer(t testing.TB, hosts ...string) *KeyPair {
	t.Helper()
	kp, err := ca.issueServer(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func (ca *CA) issueServer(hosts ...string) (*KeyPair, error) {
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1"}
	}
	tmpl, err := template(hosts[0])
	if err != nil {
		return nil, err
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	return ca.issue(tmpl)
}

// IssueClient issues a client certificate whose subject is CN=commonName
// only; the databases map the common name to the database user.
func (ca *CA) IssueClient(t testing.TB, commonName string) *KeyPair {
	t.Helper()
	kp, err := ca.issueClient(commonName)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func (ca *CA) issueClient(commonName string) (*KeyPair, error) {
	if commonName == "" {
		return nil, errors.New("harness: client certificate needs a common name (the database user)")
	}
	tmpl, err := template(commonName)
	if err != nil {
		return nil, err
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return ca.issue(tmpl)
}

func (ca *CA) issue(tmpl *x509.Certificate) (*KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("harness: key: %w", err)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("harness: issue %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("harness: issue %q: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("harness: issue %q: %w", tmpl.Subject.CommonName, err)
	}
	return &KeyPair{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", keyDER)}, nil
}

func template(commonName string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("harness: serial: %w", err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName},
		// Backdated so a clock a little behind still accepts it.
		NotBefore: now.Add(-time.Hour),
		NotAfter:  now.Add(24 * time.Hour),
	}, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// Pool is a certificate pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WriteCert writes the CA certificate as PEM to path.
func (ca *CA) WriteCert(t testing.TB, path string) {
	t.Helper()
	if err := os.WriteFile(path, ca.CertPEM, 0o644); err != nil {
		t.Fatal(fmt.Errorf("harness: write CA certificate: %w", err))
	}
}

// TLSCertificate is the pair as a crypto/tls certificate.
func (kp *KeyPair) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key, Leaf: kp.Cert}
}

// Write writes dir/name.crt and dir/name.key (mode 0600, which libpq and
// the servers insist on) and returns their paths.
func (kp *KeyPair) Write(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := writePair(dir, name, kp.CertPEM, kp.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func writePair(dir, name string, certPEM, keyPEM []byte) (certFile, keyFile string, err error) {
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("harness: write certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("harness: write key: %w", err)
	}
	return certFile, keyFile, nil
}
