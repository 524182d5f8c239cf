// Package kerberos gives the agent Kerberos credentials for databases in
// an Active Directory domain (SQL Server), as the ad: block of a database
// configures them, and builds the SPNEGO token a client sends to log in.
//
// Two ways to a ticket:
//   - PKINIT (no keytab_file): the agent signs a short-lived db-client
//     certificate for the database user, carrying the user's UPN and
//     Kerberos principal name, and runs MIT kinit with the PKINIT plugin
//     into a credential cache of its own (KRB5CCNAME=FILE:… in a private
//     directory, KRB5_CONFIG from ad.krb5_file or generated). MIT kvno then
//     fetches the service ticket for ad.spn into the same cache. No password
//     or keytab exists anywhere; the domain trusts the db-client CA (NTAuth)
//     and maps the certificate to the account.
//   - keytab (ad.keytab_file): gokrb5 logs in with the keys of the keytab
//     and asks for the service ticket itself.
//
// Either way the ticket cache is kept until the ticket is close to its end,
// and every new connection gets a fresh AP-REQ (authenticators are not
// reused) wrapped in SPNEGO.
package kerberos

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/config"
)

// Method names, as the login event records them.
const (
	MethodPKINIT = "kerberos-pkinit"
	MethodKeytab = "kerberos-keytab"
)

// IssueFunc signs a db-client certificate (ca.Authorities.IssueDBClient).
type IssueFunc func(pub crypto.PublicKey, dbUser string, ttl time.Duration, opts ...ca.DBClientOption) (*x509.Certificate, []byte, error)

// Options configure providers. The zero values of the optional fields take
// the defaults.
type Options struct {
	// Issue signs PKINIT certificates; required for PKINIT.
	Issue IssueFunc
	// DBClientCA is the db-client CA certificate (PEM). MIT's PKINIT
	// client checks its own certificate's chain before sending it, so the
	// CA must be among its anchors; required for PKINIT.
	DBClientCA []byte
	// CRLDistributionPoints are written into PKINIT certificates: Active
	// Directory checks their revocation and refuses a certificate whose
	// CRL it cannot fetch. Empty means the LDAP location in the domain's
	// configuration partition where deploy/ad.md publishes the db-client
	// CRL (see DefaultCRLDistributionPoint).
	CRLDistributionPoints []string
	// CertTTL is the life of PKINIT certificates (5 minutes): they are
	// only used to obtain a ticket.
	CertTTL time.Duration
	// TicketLifetime is asked of kinit (10 hours); the KDC may grant less.
	TicketLifetime time.Duration
	// Kinit and Kvno are the MIT programs ("kinit", "kvno" on PATH).
	Kinit, Kvno string
	// Dir holds the private credential caches (a new directory under the
	// system temporary directory).
	Dir string
	// CommandTimeout bounds one kinit or kvno run (30s).
	CommandTimeout time.Duration
	Logger         *slog.Logger
}

// Provider holds the Kerberos credentials of one AD domain as one
// database's ad: block configures it.
type Provider struct {
	ad     config.AD
	o      Options
	realm  string
	spn    string
	kdc    string // host:port
	kdcHst string // host name the KDC's certificate must carry
	method string
	dir    string
	conf   string // KRB5_CONFIG for MIT tools

	mu    sync.Mutex
	users map[string]*userCreds
}

// New checks ad and prepares a provider. It does not contact the KDC.
func New(ad config.AD, o Options) (*Provider, error) {
	if ad.Domain == "" {
		return nil, errors.New("ad.domain is required (the Active Directory domain, e.g. example.com)")
	}
	if ad.SPN == "" {
		return nil, errors.New("ad.spn is required (the SQL Server's service principal name, e.g. MSSQLSvc/sql.example.com:1433)")
	}
	if ad.KDCHostName == "" && ad.Krb5File == "" {
		return nil, errors.New("ad.kdc_host_name is required (the domain controller's host name, as in its certificate) unless ad.krb5_file is given")
	}
	if o.CertTTL <= 0 {
		o.CertTTL = 5 * time.Minute
	}
	if o.TicketLifetime <= 0 {
		o.TicketLifetime = 10 * time.Hour
	}
	if o.Kinit == "" {
		o.Kinit = "kinit"
	}
	if o.Kvno == "" {
		o.Kvno = "kvno"
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	p := &Provider{
		ad: ad, o: o, realm: strings.ToUpper(ad.Domain), spn: ad.SPN, users: map[string]*userCreds{},
		method: MethodPKINIT,
	}
	if len(p.o.CRLDistributionPoints) == 0 {
		p.o.CRLDistributionPoints = []string{DefaultCRLDistributionPoint(ad.Domain)}
	}
	if i := strings.LastIndexByte(p.spn, '@'); i > 0 {
		p.realm, p.spn = p.spn[i+1:], p.spn[:i]
	}
	if ad.KDCHostName != "" {
		host, port, err := net.SplitHostPort(ad.KDCHostName)
		if err != nil {
			host, port = ad.KDCHostName, "88"
		}
		p.kdcHst, p.kdc = host, net.JoinHostPort(host, port)
	}
	if ad.KeytabFile != "" {
		p.method = MethodKeytab
		if _, err := os.Stat(ad.KeytabFile); err != nil {
			return nil, fmt.Errorf("ad.keytab_file: %w", err)
		}
		return p, nil
	}
	if o.Issue == nil || len(o.DBClientCA) == 0 {
		return nil, errors.New("kerberos: PKINIT needs the db-client CA to sign certificates (Options.Issue and DBClientCA)")
	}
	if ad.LDAPCert == "" && ad.Krb5File == "" {
		return nil, errors.New("ad.ldap_cert is required for PKINIT: the CA certificate (PEM) of the domain, which issued the domain controller's certificate")
	}
	if ad.LDAPCert != "" {
		if _, err := os.Stat(ad.LDAPCert); err != nil {
			return nil, fmt.Errorf("ad.ldap_cert: %w", err)
		}
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "tollgate-krb5-")
		if err != nil {
			return nil, err
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	p.dir = dir
	if err := p.writeConfig(); err != nil {
		return nil, err
	}
	return p, nil
}

// DefaultCRLDistributionPoint is where the db-client CRL is published in
// domain's Active Directory: the object certutil -dspublish -f CRL
// Tollgate tollgate creates under the configuration partition's CDP
// container, which every domain controller reads over LDAP.
func DefaultCRLDistributionPoint(domain string) string {
	var dcs []string
	for _, part := range strings.Split(strings.ToLower(domain), ".") {
		if part != "" {
			dcs = append(dcs, "DC="+part)
		}
	}
	return "ldap:///CN=tollgate,CN=Tollgate,CN=CDP,CN=Public Key Services,CN=Services,CN=Configuration," +
		strings.Join(dcs, ",") + "?certificateRevocationList?base?objectClass=cRLDistributionPoint"
}

// Method is MethodPKINIT or MethodKeytab.
func (p *Provider) Method() string { return p.method }

// Realm is the Kerberos realm (the domain in upper case).
func (p *Provider) Realm() string { return p.realm }

// SPN is the service principal name tickets are for.
func (p *Provider) SPN() string { return p.spn }

// Close removes the credential caches.
func (p *Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users = map[string]*userCreds{}
	if p.dir != "" && p.o.Dir == "" {
		return os.RemoveAll(p.dir)
	}
	return nil
}

// Principal is the Kerberos principal (without realm) the database user
// logs in as: the user itself, or the part before @ when it names a realm.
func principalOf(dbUser string) string {
	if i := strings.IndexByte(dbUser, '@'); i > 0 {
		return dbUser[:i]
	}
	if i := strings.IndexByte(dbUser, '\\'); i > 0 {
		// DOMAIN\user, as SQL Server shows Windows logins.
		return dbUser[i+1:]
	}
	return dbUser
}

// InitSecContext returns the first token of a login as dbUser: a SPNEGO
// NegTokenInit holding a Kerberos AP-REQ for the SPN.
func (p *Provider) InitSecContext(ctx context.Context, dbUser string) (*SecContext, error) {
	princ := principalOf(dbUser)
	if princ == "" || strings.ContainsAny(princ, " /@") {
		return nil, fmt.Errorf("kerberos: %q is not a user principal name", dbUser)
	}
	uc := p.user(princ)
	cl, err := uc.client(ctx, p)
	if err != nil {
		return nil, err
	}
	return newSecContext(cl, p.spn, princ+"@"+p.realm)
}

func (p *Provider) user(princ string) *userCreds {
	p.mu.Lock()
	defer p.mu.Unlock()
	uc := p.users[princ]
	if uc == nil {
		uc = &userCreds{principal: princ}
		p.users[princ] = uc
	}
	return uc
}

// Registry hands out one provider per database, built on first use from
// the database's ad: block.
type Registry struct {
	o  Options
	mu sync.Mutex
	m  map[string]*registered
}

type registered struct {
	ad config.AD
	p  *Provider
}

// NewRegistry returns a registry whose providers share o.
func NewRegistry(o Options) *Registry { return &Registry{o: o, m: map[string]*registered{}} }

// For returns the provider of database name configured with ad; a changed
// configuration replaces the provider.
func (r *Registry) For(name string, ad config.AD) (*Provider, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.m[name]; ok && e.ad == ad {
		return e.p, nil
	} else if ok {
		_ = e.p.Close()
		delete(r.m, name)
	}
	p, err := New(ad, r.o)
	if err != nil {
		return nil, fmt.Errorf("database %q: %w", name, err)
	}
	r.m[name] = &registered{ad: ad, p: p}
	return p, nil
}

// Close closes every provider.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for n, e := range r.m {
		errs = append(errs, e.p.Close())
		delete(r.m, n)
	}
	return errors.Join(errs...)
}
