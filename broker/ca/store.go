package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// CAValidity is how long a new CA certificate is valid. Rotation is a later
// phase; until then a CA must outlive every certificate it signs.
const CAValidity = 10 * 365 * 24 * time.Hour

// Open loads the CAs of dataDir, creating any that are missing (first use).
// It refuses a key file whose mode is wider than 0600, a key without its
// certificate or the reverse, and a key that does not match its certificate.
// Concurrent Opens of the same data dir (two processes) are serialised by a
// lock file so that only one of them creates the CAs.
func Open(dataDir string) (*Authorities, error) {
	if dataDir == "" {
		return nil, errors.New("ca: no data dir")
	}
	dir := filepath.Join(dataDir, "ca")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	a := &Authorities{dir: dir, cas: map[Type]*authority{}}
	for _, t := range Types {
		ca, err := loadOrCreate(dir, t)
		if err != nil {
			return nil, err
		}
		a.cas[t] = ca
	}
	return a, nil
}

// Dir is the directory holding the CA files.
func (a *Authorities) Dir() string { return a.dir }

func keyPath(dir string, t Type) string  { return filepath.Join(dir, string(t)+".key") }
func certPath(dir string, t Type) string { return filepath.Join(dir, string(t)+".crt") }

func loadOrCreate(dir string, t Type) (*authority, error) {
	kp, cp := keyPath(dir, t), certPath(dir, t)
	_, kerr := os.Stat(kp)
	_, cerr := os.Stat(cp)
	switch {
	case errors.Is(kerr, fs.ErrNotExist) && errors.Is(cerr, fs.ErrNotExist):
		return create(dir, t)
	case errors.Is(kerr, fs.ErrNotExist):
		return nil, fmt.Errorf("ca: %s exists but its key %s is missing: restore the key from a backup (removing both creates a new %s CA, and nothing it signed before will be trusted)", cp, kp, t)
	case errors.Is(cerr, fs.ErrNotExist):
		return nil, fmt.Errorf("ca: %s exists but its certificate %s is missing: restore it from a backup (removing both creates a new %s CA, and nothing it signed before will be trusted)", kp, cp, t)
	case kerr != nil:
		return nil, fmt.Errorf("ca: %w", kerr)
	case cerr != nil:
		return nil, fmt.Errorf("ca: %w", cerr)
	}
	return load(dir, t)
}

// checkKeyMode refuses a key file that anyone but its owner could read or
// that is not a regular file.
func checkKeyMode(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("ca: key file %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&^0o600 != 0 {
		return fmt.Errorf("ca: key file %s has mode %04o, wider than 0600: others could read the CA key; run `chmod 600 %s` if it was not exposed, otherwise replace the CA", path, perm, path)
	}
	return nil
}

func load(dir string, t Type) (*authority, error) {
	kp, cp := keyPath(dir, t), certPath(dir, t)
	if err := checkKeyMode(kp); err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(kp)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("ca: %s: no PEM \"PRIVATE KEY\" block", kp)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", kp, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("ca: %s: key of type %T cannot sign", kp, k)
	}
	certPEM, err := os.ReadFile(cp)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("ca: %s: no PEM \"CERTIFICATE\" block", cp)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", cp, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("ca: %s is not a CA certificate", cp)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if e, ok := signer.Public().(equaler); !ok || !e.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("ca: %s does not match the certificate %s", kp, cp)
	}
	if now := time.Now(); now.After(cert.NotAfter) {
		return nil, fmt.Errorf("ca: the %s CA certificate %s expired at %s", t, cp, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return &authority{typ: t, cert: cert, signer: signer, pem: pem.EncodeToMemory(cb)}, nil
}

func create(dir string, t Type) (*authority, error) {
	var signer crypto.Signer
	var err error
	if t.rsa() {
		signer, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: generate %s key: %w", t, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         "Tollgate " + string(t) + " CA",
			Organization:       []string{"Tollgate"},
			OrganizationalUnit: []string{string(t)},
		},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// No intermediates: every certificate is signed by a root directly.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("ca: self-sign %s CA: %w", t, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// The key goes first: a crash between the two leaves a key without its
	// certificate, which Open reports, rather than a certificate whose key
	// is lost.
	if err := writeAtomic(keyPath(dir, t), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(certPath(dir, t), certPEM, 0o644); err != nil {
		return nil, err
	}
	return &authority{typ: t, cert: cert, signer: signer, pem: certPEM}, nil
}

// writeAtomic writes data to path through a temporary file in the same
// directory, created with mode already set so the content is never readable
// by others, not even briefly.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("ca: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

// lockDir takes an exclusive lock on dir/.lock, held until unlock.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("ca: lock %s: %w", f.Name(), err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// newSerial returns a random positive 128-bit serial number: unpredictable
// serials are what keeps chosen-prefix collisions off the table, and 128 bits
// never repeat in practice.
func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}
