// Package ca holds Tollgate's four certificate authorities and everything
// they sign:
//
//   - user: client certificates for people and bots, carrying their identity
//     (broker/identity) in a private extension;
//   - host: certificates of agents and the proxy (server and client);
//   - db: server certificates for databases, which agents verify;
//   - db-client: client certificates agents present to databases (CN is the
//     database user; optionally UPN and Kerberos PKINIT names), with a CRL.
//
// Private keys live in <data_dir>/ca/<type>.key (mode 0600, directory 0700)
// and never leave this package: callers get certificates, and the only
// private keys written out are the fresh server keys of `tollgate auth sign`.
//
// Key algorithms: user and host use ECDSA P-256 (small certificates, fast
// signing, only Tollgate and Go's TLS stack read them). db and db-client use
// RSA 2048 because the databases and their tooling read those: Active
// Directory PKINIT and NTAuth/smart-card logon want RSA issuers and client
// keys, SQL Server and older MySQL/JDBC stacks handle RSA server chains
// best, and the CRL of db-client is imported into Windows.
package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Type names one of the authorities.
type Type string

// The four authorities.
const (
	User     Type = "user"
	Host     Type = "host"
	DB       Type = "db"
	DBClient Type = "db-client"
)

// Types lists every authority in a stable order.
var Types = []Type{User, Host, DB, DBClient}

// ParseType accepts an authority name; "db_client" is accepted for
// "db-client" because the command-line contract spells it both ways.
func ParseType(s string) (Type, error) {
	t := Type(strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "_", "-"))
	for _, k := range Types {
		if t == k {
			return t, nil
		}
	}
	return "", fmt.Errorf("unknown CA type %q (want user, host, db or db-client)", s)
}

// rsaTypes are the authorities whose keys are RSA (see the package comment).
func (t Type) rsa() bool { return t == DB || t == DBClient }

// Authorities is the set of CAs in one data dir. It is safe for concurrent
// use.
type Authorities struct {
	dir string // <data_dir>/ca
	cas map[Type]*authority
	mu  sync.Mutex // serialises revocation list updates
}

type authority struct {
	typ    Type
	cert   *x509.Certificate
	signer crypto.Signer
	pem    []byte
}

// Cert returns the CA certificate of t.
func (a *Authorities) Cert(t Type) (*x509.Certificate, error) {
	ca, err := a.get(t)
	if err != nil {
		return nil, err
	}
	return ca.cert, nil
}

// CertPEM returns the PEM encoding of the CA certificate of t.
func (a *Authorities) CertPEM(t Type) ([]byte, error) {
	ca, err := a.get(t)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), ca.pem...), nil
}

// Pool returns a pool holding only the CA certificate of t: the trust anchor
// for verifying what t signs (agents verify databases with Pool(DB)).
func (a *Authorities) Pool(t Type) (*x509.CertPool, error) {
	ca, err := a.get(t)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p, nil
}

// Export returns a CA certificate in the form `tollgate auth export --type`
// names: "user", "host", "db", "db-client" (PEM) or "db-client-der" (DER,
// what Windows NTAuth and GPO imports take). Underscores may stand for
// dashes.
func (a *Authorities) Export(kind string) ([]byte, error) {
	k := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(kind)), "_", "-")
	if k == "db-client-der" {
		c, err := a.Cert(DBClient)
		if err != nil {
			return nil, err
		}
		return append([]byte(nil), c.Raw...), nil
	}
	t, err := ParseType(kind)
	if err != nil {
		return nil, fmt.Errorf("unknown export type %q (want db-client, db-client-der, db, user or host)", kind)
	}
	return a.CertPEM(t)
}

func (a *Authorities) get(t Type) (*authority, error) {
	if a == nil {
		return nil, errors.New("ca: authorities not open")
	}
	ca, ok := a.cas[t]
	if !ok {
		return nil, fmt.Errorf("ca: unknown CA type %q", t)
	}
	return ca, nil
}
