package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/events"

	"github.com/tollgate-db/tollgate/broker/identity"
)

// Default lifetimes, used when a ttl of 0 is passed.
const (
	// DefaultUserTTL is a working day: long enough not to interrupt one,
	// short enough that a stolen certificate is soon worthless.
	DefaultUserTTL = 12 * time.Hour
	// DefaultHostTTL is long because agents keep the certificate they got
	// when they joined until rotation (a later phase) renews it.
	DefaultHostTTL = 365 * 24 * time.Hour
	// DefaultDBServerTTL is how long `auth sign --format=db|cockroachdb`
	// certificates last: an administrator installs them by hand, so they
	// are long-lived like any server certificate.
	DefaultDBServerTTL = 90 * 24 * time.Hour
	// DefaultDBClientTTL: agents ask for a certificate per upstream login and
	// may cache it, so an hour is plenty.
	DefaultDBClientTTL = time.Hour
)

// backdate is subtracted from NotBefore so that a peer whose clock lags a
// little still accepts a certificate issued a moment ago.
const backdate = time.Minute

// IssueUser signs a user certificate for pub carrying id: CN is id.User, the
// identity (roles, traits, access requests) is in the extension
// identity.OIDIdentity, and the only extended key usage is ClientAuth. ttl 0
// means DefaultUserTTL. id.Expires is set to the certificate's NotAfter. It
// returns the certificate and its PEM encoding.
func (a *Authorities) IssueUser(pub crypto.PublicKey, id identity.Identity, ttl time.Duration) (*x509.Certificate, []byte, error) {
	ca, err := a.get(User)
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := ca.template(ttl, DefaultUserTTL)
	if err != nil {
		return nil, nil, err
	}
	id.Expires = tmpl.NotAfter
	ext, err := identity.Extension(id)
	if err != nil {
		return nil, nil, err
	}
	tmpl.Subject = pkix.Name{CommonName: id.User}
	tmpl.KeyUsage = keyUsage(pub)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	tmpl.ExtraExtensions = []pkix.Extension{ext}
	return ca.sign(tmpl, pub)
}

// ProxyHostID is the host id (common name) of the proxies' certificate.
// Proxies trust a connection forwarded by a holder of it to name the
// client truly, so no agent may join under it.
const ProxyHostID = "proxy"

// IssueHost signs the certificate of an agent or proxy: CN is hostID,
// dnsNames become SANs (IP addresses as IP SANs), usages ServerAuth and
// ClientAuth (agents are servers to users and clients of the broker). ttl 0
// means DefaultHostTTL.
func (a *Authorities) IssueHost(pub crypto.PublicKey, hostID string, dnsNames []string, ttl time.Duration) (*x509.Certificate, []byte, error) {
	if err := checkName("host id", hostID); err != nil {
		return nil, nil, err
	}
	ca, err := a.get(Host)
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := ca.template(ttl, DefaultHostTTL)
	if err != nil {
		return nil, nil, err
	}
	tmpl.Subject = pkix.Name{CommonName: hostID}
	if err := addSANs(tmpl, dnsNames); err != nil {
		return nil, nil, err
	}
	tmpl.KeyUsage = keyUsage(pub)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	return ca.sign(tmpl, pub)
}

// IssueDBServer creates a key and a server certificate for a database,
// signed by the db CA: CN is hosts[0], every host is a SAN (DNS name or IP
// address), usage ServerAuth. It returns the certificate and key in PEM and
// casPEM, the db-client CA certificate: the database trusts it for client
// certificates (PostgreSQL ssl_ca_file). ttl 0 means DefaultDBServerTTL.
// The key is RSA 2048 (see the package comment) in PKCS #1 form, which every
// database reads, old MySQL builds included.
func (a *Authorities) IssueDBServer(hosts []string, ttl time.Duration) (certPEM, keyPEM, casPEM []byte, err error) {
	return a.issueDBServer(hosts, ttl, hosts[0:min(len(hosts), 1)], false)
}

// IssueCockroachNode creates a key and a CockroachDB node certificate signed
// by the db CA: CN "node" (CockroachDB checks it), SANs "node" and hosts,
// usages ServerAuth and ClientAuth (nodes connect to each other). ttl 0
// means DefaultDBServerTTL.
func (a *Authorities) IssueCockroachNode(hosts []string, ttl time.Duration) (certPEM, keyPEM []byte, err error) {
	certPEM, keyPEM, _, err = a.issueDBServer(append([]string{"node"}, hosts...), ttl, []string{"node"}, true)
	return certPEM, keyPEM, err
}

func (a *Authorities) issueDBServer(hosts []string, ttl time.Duration, cn []string, client bool) (certPEM, keyPEM, casPEM []byte, err error) {
	if len(hosts) == 0 || len(cn) == 0 {
		return nil, nil, nil, errors.New("ca: database certificate needs at least one host")
	}
	ca, err := a.get(DB)
	if err != nil {
		return nil, nil, nil, err
	}
	clientCA, err := a.get(DBClient)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl, err := ca.template(ttl, DefaultDBServerTTL)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl.Subject = pkix.Name{CommonName: strings.TrimSpace(cn[0])}
	if err := addSANs(tmpl, hosts); err != nil {
		return nil, nil, nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca: generate key: %w", err)
	}
	tmpl.KeyUsage = keyUsage(key.Public())
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	_, certPEM, err = ca.sign(tmpl, key.Public())
	if err != nil {
		return nil, nil, nil, err
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return certPEM, keyPEM, append([]byte(nil), clientCA.pem...), nil
}

// DBClientOption adds to a db-client certificate.
type DBClientOption func(*x509.Certificate, *sanBuilder) error

// WithUPN adds a Microsoft User Principal Name SAN (otherName
// 1.3.6.1.4.1.311.20.2.3, UTF8String) and the smart-card logon usage, which
// is how Active Directory maps a PKINIT certificate to an account.
func WithUPN(upn string) DBClientOption {
	return func(c *x509.Certificate, s *sanBuilder) error {
		if err := checkName("UPN", upn); err != nil {
			return err
		}
		if !strings.Contains(upn, "@") {
			return fmt.Errorf("ca: UPN %q has no @domain", upn)
		}
		s.upns = append(s.upns, upn)
		addEKU(c, oidKPMSSmartcardLogin)
		return nil
	}
}

// WithPKINIT adds the Kerberos principal SAN of RFC 4556 §3.2.2 (otherName
// id-pkinit-san 1.3.6.1.5.2.2 holding a KRB5PrincipalName: realm and
// NT-PRINCIPAL name, components split on '/') and the id-pkinit-KPClientAuth
// (1.3.6.1.5.2.3.4) and smart-card logon usages. An MIT KDC maps the
// certificate to principal@realm by this SAN without any pkinit_cert_match
// rule; its default pkinit_eku_checking (kpClientAuth) wants the first usage,
// Active Directory the second. principal "" means the db user (the CN).
func WithPKINIT(principal, realm string) DBClientOption {
	return func(c *x509.Certificate, s *sanBuilder) error {
		p := principal
		if p == "" {
			p = c.Subject.CommonName
		}
		kp, err := parsePrincipal(p, realm)
		if err != nil {
			return err
		}
		s.pkinit = append(s.pkinit, kp)
		addEKU(c, oidKPPKINITClientAuth)
		addEKU(c, oidKPMSSmartcardLogin)
		return nil
	}
}

// WithCRLDistributionPoints names where the db-client CRL is published.
// Windows checks revocation of smart-card logon certificates and refuses a
// certificate without a reachable distribution point.
func WithCRLDistributionPoints(urls ...string) DBClientOption {
	return func(c *x509.Certificate, _ *sanBuilder) error {
		for _, u := range urls {
			if err := checkName("CRL distribution point", u); err != nil {
				return err
			}
		}
		c.CRLDistributionPoints = append(c.CRLDistributionPoints, urls...)
		return nil
	}
}

// IssueDBClient signs the certificate an agent presents to a database as
// dbUser: CN is dbUser (PostgreSQL's cert auth maps CN to the role, MySQL's
// REQUIRE SUBJECT matches "/CN=dbUser"; the subject holds nothing else so
// that match stays exact), usage ClientAuth. ttl 0 means DefaultDBClientTTL.
func (a *Authorities) IssueDBClient(pub crypto.PublicKey, dbUser string, ttl time.Duration, opts ...DBClientOption) (*x509.Certificate, []byte, error) {
	if err := checkName("database user", dbUser); err != nil {
		return nil, nil, err
	}
	ca, err := a.get(DBClient)
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := ca.template(ttl, DefaultDBClientTTL)
	if err != nil {
		return nil, nil, err
	}
	tmpl.Subject = pkix.Name{CommonName: dbUser}
	tmpl.KeyUsage = keyUsage(pub)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	var sans sanBuilder
	for _, o := range opts {
		if err := o(tmpl, &sans); err != nil {
			return nil, nil, err
		}
	}
	if ext, ok, err := sans.extension(); err != nil {
		return nil, nil, err
	} else if ok {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
	}
	return ca.sign(tmpl, pub)
}

// template starts a leaf certificate: random serial, validity from a minute
// ago for ttl (or def), never past the CA's own expiry.
func (ca *authority) template(ttl, def time.Duration) (*x509.Certificate, error) {
	if ttl < 0 {
		return nil, fmt.Errorf("ca: negative ttl %s", ttl)
	}
	if ttl == 0 {
		ttl = def
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
	}, nil
}

func (ca *authority) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, []byte, error) {
	if pub == nil {
		return nil, nil, errors.New("ca: no public key to certify")
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.signer)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: sign with the %s CA: %w", ca.typ, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// keyUsage is DigitalSignature, plus KeyEncipherment for RSA keys (TLS 1.2
// RSA key exchange, which some database clients still negotiate).
func keyUsage(pub crypto.PublicKey) x509.KeyUsage {
	if _, ok := pub.(*rsa.PublicKey); ok {
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	return x509.KeyUsageDigitalSignature
}

func addSANs(c *x509.Certificate, hosts []string) error {
	seen := map[string]bool{}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if err := checkName("host", h); err != nil {
			return err
		}
		if seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			c.IPAddresses = append(c.IPAddresses, ip)
		} else {
			c.DNSNames = append(c.DNSNames, h)
		}
	}
	return nil
}

func checkName(what, s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("ca: empty %s", what)
	}
	if len(s) > 1024 {
		return fmt.Errorf("ca: %s is %d bytes, more than 1024", what, len(s))
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("ca: %s %q contains a control character", what, s)
		}
	}
	return nil
}

func addEKU(c *x509.Certificate, oid asn1.ObjectIdentifier) {
	for _, o := range c.UnknownExtKeyUsage {
		if o.Equal(oid) {
			return
		}
	}
	c.UnknownExtKeyUsage = append(c.UnknownExtKeyUsage, oid)
}

// FrameSigner makes a fresh key, certified by the host CA for hostID, that
// signs audit frames and seals (events.Signer). The key lives only in
// memory: every start makes a new one, and the trail names the
// certificate with every frame it signs.
func (a *Authorities) FrameSigner(hostID string) (*events.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf, _, err := a.IssueHost(key.Public(), hostID, nil, 0)
	if err != nil {
		return nil, err
	}
	return events.NewSigner(key, leaf)
}
