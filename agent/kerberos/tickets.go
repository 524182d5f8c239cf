package kerberos

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/credentials"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/tollgate-db/tollgate/broker/ca"
)

// userCreds are one principal's tickets.
type userCreds struct {
	principal string

	mu        sync.Mutex
	ccache    string
	tgtEnd    time.Time
	ticketEnd time.Time
	kt        *client.Client
}

// renewBefore is how long before a ticket's end a new one is fetched:
// a connection must not start with a ticket that expires during login.
func renewBefore(start, end time.Time) time.Duration {
	return min(end.Sub(start)/10, 5*time.Minute)
}

// client returns a gokrb5 client holding a valid service ticket for the
// provider's SPN.
func (u *userCreds) client(ctx context.Context, p *Provider) (*client.Client, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if p.method == MethodKeytab {
		return u.keytabClient(p)
	}
	now := time.Now()
	if u.ccache == "" || now.After(u.tgtEnd.Add(-renewBefore(now, u.tgtEnd))) {
		if err := u.kinit(ctx, p); err != nil {
			return nil, err
		}
	}
	if now.After(u.ticketEnd.Add(-renewBefore(now, u.ticketEnd))) {
		if err := u.kvno(ctx, p); err != nil {
			return nil, err
		}
	}
	cc, err := credentials.LoadCCache(u.ccache)
	if err != nil {
		return nil, fmt.Errorf("kerberos: reading the credential cache kinit wrote: %w", err)
	}
	cl, err := client.NewFromCCache(cc, krbconfig.New(), client.DisablePAFXFAST(true))
	if err != nil {
		return nil, fmt.Errorf("kerberos: credential cache of %s: %w", u.principal, err)
	}
	return cl, nil
}

// env is the environment of MIT tools for this user: its own cache and
// the provider's configuration, nothing inherited that could point them
// elsewhere.
func (u *userCreds) env(p *Provider) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KRB5") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "KRB5_CONFIG="+p.conf, "KRB5CCNAME=FILE:"+u.ccache)
}

func (p *Provider) run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.o.CommandTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	c.Env = env
	c.Stdin = strings.NewReader("")
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return out.String(), fmt.Errorf("%s did not finish within %s", name, p.o.CommandTimeout)
	}
	return out.String(), err
}

// kinit signs a PKINIT certificate for the user and gets a TGT with it
// into a new private credential cache. The certificate and key exist on
// disk (0600, in the provider's 0700 directory) only while kinit runs.
func (u *userCreds) kinit(ctx context.Context, p *Provider) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	upn := u.principal + "@" + strings.ToLower(p.ad.Domain)
	cert, certPEM, err := p.o.Issue(key.Public(), u.principal, p.o.CertTTL,
		ca.WithUPN(upn), ca.WithPKINIT(u.principal, p.realm), ca.WithCRLDistributionPoints(p.o.CRLDistributionPoints...))
	if err != nil {
		return fmt.Errorf("kerberos: signing the PKINIT certificate of %s: %w", u.principal, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	base := filepath.Join(p.dir, u.principal+"-"+hex.EncodeToString(rnd[:]))
	certFile, keyFile := base+".crt", base+".key"
	defer os.Remove(certFile)
	defer os.Remove(keyFile)
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	old := u.ccache
	u.ccache = base + ".ccache"
	if old != "" {
		_ = os.Remove(old)
	}
	args := []string{
		"-l", fmt.Sprintf("%ds", int(p.o.TicketLifetime.Seconds())),
		"-X", "X509_user_identity=FILE:" + certFile + "," + keyFile,
	}
	for _, a := range p.anchors() {
		args = append(args, "-X", "X509_anchors=FILE:"+a)
	}
	args = append(args, u.principal+"@"+p.realm)
	// When PKINIT fails kinit falls back to asking for a password and
	// prints only that it could not read one: the PKINIT failure itself
	// is in the trace.
	trace := base + ".trace"
	defer os.Remove(trace)
	out, err := p.run(ctx, append(u.env(p), "KRB5_TRACE="+trace), p.o.Kinit, args...)
	if err != nil {
		_ = os.Remove(u.ccache)
		u.ccache = ""
		tr, _ := os.ReadFile(trace)
		return kinitError(p, u.principal, preauthFailures(string(tr)), out, err)
	}
	cc, err := credentials.LoadCCache(u.ccache)
	if err != nil {
		return fmt.Errorf("kerberos: kinit succeeded but its credential cache does not read: %w", err)
	}
	u.tgtEnd = time.Time{}
	for _, c := range cc.GetEntries() {
		if len(c.Server.PrincipalName.NameString) > 0 && c.Server.PrincipalName.NameString[0] == "krbtgt" {
			u.tgtEnd = c.EndTime
		}
	}
	if u.tgtEnd.IsZero() {
		return fmt.Errorf("kerberos: kinit left no TGT in the cache for %s", u.principal)
	}
	u.ticketEnd = time.Time{}
	p.o.Logger.Info("kerberos: PKINIT ticket", "principal", u.principal+"@"+p.realm,
		"cert_serial", cert.SerialNumber.String(), "expires", u.tgtEnd)
	return nil
}

// kvno gets the service ticket for the SPN into the user's cache.
func (u *userCreds) kvno(ctx context.Context, p *Provider) error {
	spn := p.spn + "@" + p.realm
	out, err := p.run(ctx, u.env(p), p.o.Kvno, spn)
	if err != nil {
		return kvnoError(p, out, err)
	}
	cc, err := credentials.LoadCCache(u.ccache)
	if err != nil {
		return fmt.Errorf("kerberos: reading the credential cache after kvno: %w", err)
	}
	for _, c := range cc.GetEntries() {
		if c.Server.PrincipalName.PrincipalNameString() == p.spn {
			u.ticketEnd = c.EndTime
			return nil
		}
	}
	return fmt.Errorf("kerberos: kvno left no ticket for %s in the cache", spn)
}

// anchors are the CA files MIT's PKINIT client trusts: the domain's CA
// (for the KDC's certificate) and the db-client CA (for its own chain).
func (p *Provider) anchors() []string {
	var a []string
	if p.ad.LDAPCert != "" {
		a = append(a, p.ad.LDAPCert)
	}
	return append(a, filepath.Join(p.dir, "db-client-ca.pem"))
}

// writeConfig writes the db-client CA and, unless ad.krb5_file is given,
// a krb5.conf for the domain.
func (p *Provider) writeConfig() error {
	if err := os.WriteFile(filepath.Join(p.dir, "db-client-ca.pem"), p.o.DBClientCA, 0o600); err != nil {
		return err
	}
	if p.ad.Krb5File != "" {
		p.conf = p.ad.Krb5File
		return nil
	}
	p.conf = filepath.Join(p.dir, "krb5.conf")
	return os.WriteFile(p.conf, []byte(p.krb5Conf(true)), 0o600)
}

// krb5Conf is the configuration the agent generates: the realm's KDC at
// ad.kdc_host_name (whose certificate must carry that host name), nothing
// looked up in DNS.
func (p *Provider) krb5Conf(pkinit bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[libdefaults]\n\tdefault_realm = %s\n\tdns_lookup_kdc = false\n\tdns_lookup_realm = false\n", p.realm)
	b.WriteString("\tdns_canonicalize_hostname = false\n\trdns = false\n\tudp_preference_limit = 1\n\tforwardable = false\n")
	fmt.Fprintf(&b, "[realms]\n\t%s = {\n\t\tkdc = %s\n", p.realm, p.kdc)
	if pkinit {
		fmt.Fprintf(&b, "\t\tpkinit_kdc_hostname = %s\n", p.kdcHst)
	}
	b.WriteString("\t}\n")
	d := strings.ToLower(p.ad.Domain)
	fmt.Fprintf(&b, "[domain_realm]\n\t.%s = %s\n\t%s = %s\n", d, p.realm, d, p.realm)
	return b.String()
}

// keytabClient logs in with the keytab (once; gokrb5 renews the TGT
// itself) and makes sure a service ticket is cached.
func (u *userCreds) keytabClient(p *Provider) (*client.Client, error) {
	if u.kt == nil {
		kt, err := keytab.Load(p.ad.KeytabFile)
		if err != nil {
			return nil, fmt.Errorf("ad.keytab_file %s: %w", p.ad.KeytabFile, err)
		}
		var cfg *krbconfig.Config
		if p.ad.Krb5File != "" {
			cfg, err = krbconfig.Load(p.ad.Krb5File)
		} else {
			cfg, err = krbconfig.NewFromString(p.krb5Conf(false))
		}
		if err != nil {
			return nil, fmt.Errorf("kerberos: configuration: %w", err)
		}
		cl := client.NewWithKeytab(u.principal, p.realm, kt, cfg, client.DisablePAFXFAST(true))
		if err := cl.Login(); err != nil {
			return nil, keytabError(p, u.principal, err)
		}
		u.kt = cl
	}
	if _, _, err := u.kt.GetServiceTicket(p.spn); err != nil {
		return nil, keytabError(p, u.principal, err)
	}
	return u.kt, nil
}

// preauthFailures picks from a kinit trace the lines that say why
// pre-authentication failed: the PKINIT module's results and the KDC's
// errors (other than its request for pre-authentication).
func preauthFailures(trace string) string {
	var b strings.Builder
	for _, l := range strings.Split(trace, "\n") {
		switch {
		case strings.Contains(l, "Preauth module pkinit") && strings.Contains(l, "returned: -"),
			strings.Contains(l, "PKINIT OpenSSL error"),
			strings.Contains(l, "Received error from KDC") && !strings.Contains(l, "Additional pre-authentication required"):
			if i := strings.Index(l, ": "); i >= 0 && strings.HasPrefix(l, "[") {
				l = l[i+2:]
			}
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
