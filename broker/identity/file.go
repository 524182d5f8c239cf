package identity

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// An identity file is what bots, scripts and `tg -i FILE` use instead of an
// interactive login. It is plain text so that ordinary TLS tools can read it
// too (OpenSSL and libpq skip the header and pick the PEM blocks they want):
//
//	# comment lines
//	Tollgate-Identity: 1
//	Proxy: HOST:PORT
//	User: alice
//	Expires: 2006-01-02T15:04:05Z
//
//	-----BEGIN PRIVATE KEY-----        the holder's key (PKCS #8)
//	-----BEGIN CERTIFICATE-----        the user certificate
//	-----BEGIN CERTIFICATE-----        the user CA, then the host CA
//
// The header ends at the first PEM block. Tollgate-Identity (the format
// version) is required; Proxy is where the client connects; User and Expires
// are for people reading the file and must agree with the certificate.
// Unknown header keys are ignored so that newer brokers may add some.

// FileVersion is the format version written to the Tollgate-Identity header.
const FileVersion = "1"

// File is a parsed identity file.
type File struct {
	// ProxyAddr is the proxy's public address (host:port).
	ProxyAddr string
	// Cert holds the private key and the user certificate; Cert.Leaf is set.
	Cert tls.Certificate
	// CAs holds the CA certificates of the file (the user and host CAs): the
	// pool to verify the proxy and agents against. Only a certificate with
	// the ServerAuth usage passes as a server, so the user CA in it cannot
	// make a user certificate look like a server.
	CAs *x509.CertPool
	// CACerts are the same CA certificates in file order.
	CACerts []*x509.Certificate
	// Identity is read from the user certificate.
	Identity Identity
}

// NewFile assembles a File from its parts, checking that they fit together.
func NewFile(proxyAddr string, key crypto.Signer, cert *x509.Certificate, caCerts []*x509.Certificate) (*File, error) {
	if key == nil || cert == nil {
		return nil, errors.New("identity file: key and certificate are required")
	}
	if len(caCerts) == 0 {
		return nil, errors.New("identity file: at least one CA certificate is required")
	}
	id, err := FromCertificate(cert)
	if err != nil {
		return nil, err
	}
	f := &File{
		ProxyAddr: proxyAddr,
		Cert:      tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert},
		CAs:       x509.NewCertPool(),
		CACerts:   caCerts,
		Identity:  id,
	}
	for _, c := range caCerts {
		f.CAs.AddCert(c)
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	return f, nil
}

// Marshal encodes f in the identity file format.
func (f *File) Marshal() ([]byte, error) {
	if f.Cert.Leaf == nil || f.Cert.PrivateKey == nil {
		return nil, errors.New("identity file: key and certificate are required")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(f.Cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("identity file: encode key: %w", err)
	}
	if strings.ContainsAny(f.ProxyAddr, "\r\n") {
		return nil, fmt.Errorf("identity file: proxy address %q contains a line break", f.ProxyAddr)
	}
	var b bytes.Buffer
	b.WriteString("# Tollgate identity file. It holds a private key: keep it secret.\n")
	b.WriteString("# Use it with `tg -i FILE`, or as certificate, key and CA file of a TLS client.\n")
	fmt.Fprintf(&b, "Tollgate-Identity: %s\n", FileVersion)
	fmt.Fprintf(&b, "Proxy: %s\n", f.ProxyAddr)
	fmt.Fprintf(&b, "User: %s\n", f.Identity.User)
	fmt.Fprintf(&b, "Expires: %s\n\n", f.Cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	_ = pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: f.Cert.Leaf.Raw})
	for _, c := range f.CACerts {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes(), nil
}

// WriteFile writes f to path with mode 0600, replacing the file atomically
// so a reader never sees half a key.
func WriteFile(path string, f *File) error {
	data, err := f.Marshal()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("identity file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("identity file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("identity file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("identity file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("identity file: %w", err)
	}
	return nil
}

// LoadFile reads and checks the identity file at path: the key must match
// the certificate, the certificate must chain to a CA in the file and must
// not have expired.
func LoadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	f, err := ParseFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if now := time.Now(); now.After(f.Cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("%s: identity file: certificate of %q expired at %s; issue a new one with `tollgate auth sign --format=identity`",
			path, f.Identity.User, f.Cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return f, nil
}

// ParseFile decodes an identity file. It checks structure and signatures
// but not expiry (LoadFile does), so that an expired file can still be
// inspected.
func ParseFile(data []byte) (*File, error) {
	hdrEnd := bytes.Index(data, []byte("-----BEGIN "))
	if hdrEnd < 0 {
		return nil, errors.New("identity file: no PEM block (not an identity file)")
	}
	hdr, err := parseHeader(data[:hdrEnd])
	if err != nil {
		return nil, err
	}
	if v, ok := hdr["tollgate-identity"]; !ok {
		return nil, errors.New("identity file: no Tollgate-Identity header (not an identity file)")
	} else if v != FileVersion {
		return nil, fmt.Errorf("identity file: format version %q, this program reads %q", v, FileVersion)
	}
	var (
		key   crypto.Signer
		leaf  *x509.Certificate
		cas   []*x509.Certificate
		rest  = data[hdrEnd:]
		block *pem.Block
	)
	for n := 1; ; n++ {
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "PRIVATE KEY":
			if key != nil {
				return nil, errors.New("identity file: more than one private key")
			}
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("identity file: PEM block %d: private key: %w", n, err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("identity file: PEM block %d: private key of type %T cannot sign", n, k)
			}
			key = s
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("identity file: PEM block %d: certificate: %w", n, err)
			}
			if c.IsCA {
				cas = append(cas, c)
			} else if leaf != nil {
				return nil, errors.New("identity file: more than one user certificate")
			} else {
				leaf = c
			}
		default:
			return nil, fmt.Errorf("identity file: PEM block %d has unexpected type %q", n, block.Type)
		}
	}
	if bytes.Contains(rest, []byte("-----BEGIN ")) {
		return nil, errors.New("identity file: a PEM block is malformed")
	}
	if key == nil {
		return nil, errors.New("identity file: no private key")
	}
	if leaf == nil {
		return nil, errors.New("identity file: no user certificate")
	}
	f, err := NewFile(hdr["proxy"], key, leaf, cas)
	if err != nil {
		return nil, err
	}
	if u, ok := hdr["user"]; ok && u != f.Identity.User {
		return nil, fmt.Errorf("identity file: header says user %q but the certificate is for %q", u, f.Identity.User)
	}
	return f, nil
}

// check verifies that the parts of f fit: the key is the certificate's and
// the certificate chains to one of the CAs for client authentication. Time
// is the certificate's own validity start, so expiry is left to the caller.
func (f *File) check() error {
	pub, ok := f.Cert.PrivateKey.(crypto.Signer)
	if !ok {
		return errors.New("identity file: private key cannot sign")
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if e, ok := pub.Public().(equaler); !ok || !e.Equal(f.Cert.Leaf.PublicKey) {
		return errors.New("identity file: private key does not match the user certificate")
	}
	_, err := f.Cert.Leaf.Verify(x509.VerifyOptions{
		Roots:       f.CAs,
		CurrentTime: f.Cert.Leaf.NotBefore.Add(time.Second),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("identity file: user certificate does not verify against the file's CAs: %w", err)
	}
	return nil
}

// parseHeader reads "Key: value" lines; '#' starts a comment line. Keys are
// case-insensitive.
func parseHeader(b []byte) (map[string]string, error) {
	hdr := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, v, ok := strings.Cut(s, ":")
		if !ok {
			return nil, fmt.Errorf("identity file: header line %d: want \"Key: value\", got %q", line, s)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if _, dup := hdr[k]; dup {
			return nil, fmt.Errorf("identity file: header line %d: %q given twice", line, k)
		}
		hdr[k] = strings.TrimSpace(v)
	}
	return hdr, sc.Err()
}
