package ca

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/tollgate-db/tollgate/broker/identity"
)

// VerifyUser checks a user certificate chain as a client presents it (leaf
// first; Tollgate signs leaves directly, so nothing else is needed) against
// the user CA and returns the identity it carries. Each refusal says why:
// signed by another CA, signature invalid (altered), expired or not yet
// valid, wrong usage, or no identity.
func (a *Authorities) VerifyUser(certs []*x509.Certificate) (identity.Identity, error) {
	leaf, err := a.verify(User, certs, x509.ExtKeyUsageClientAuth, time.Now())
	if err != nil {
		return identity.Identity{}, err
	}
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return identity.Identity{}, fmt.Errorf("user certificate: %w", err)
	}
	return id, nil
}

// VerifyHost checks an agent or proxy certificate chain against the host
// CA for the given usage (ServerAuth when dialing it, ClientAuth when it
// dials) and returns its host id (the CN).
func (a *Authorities) VerifyHost(certs []*x509.Certificate, usage x509.ExtKeyUsage) (string, error) {
	leaf, err := a.verify(Host, certs, usage, time.Now())
	if err != nil {
		return "", err
	}
	return leaf.Subject.CommonName, nil
}

func (a *Authorities) verify(t Type, certs []*x509.Certificate, usage x509.ExtKeyUsage, now time.Time) (*x509.Certificate, error) {
	ca, err := a.get(t)
	if err != nil {
		return nil, err
	}
	what := string(t) + " certificate"
	if len(certs) == 0 || certs[0] == nil {
		return nil, fmt.Errorf("%s: none presented", what)
	}
	leaf := certs[0]
	// The signature is checked first and on its own so that the error can
	// tell a certificate of another CA from an altered one.
	if err := leaf.CheckSignatureFrom(ca.cert); err != nil {
		if bytes.Equal(leaf.RawIssuer, ca.cert.RawSubject) &&
			(len(leaf.AuthorityKeyId) == 0 || bytes.Equal(leaf.AuthorityKeyId, ca.cert.SubjectKeyId)) {
			return nil, fmt.Errorf("%s %q: signature does not verify against the Tollgate %s CA: the certificate was altered", what, leaf.Subject.CommonName, t)
		}
		return nil, fmt.Errorf("%s %q: issued by %q, not by this cluster's Tollgate %s CA", what, leaf.Subject.CommonName, leaf.Issuer.String(), t)
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%s %q: expired at %s (now %s)", what, leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%s %q: not valid before %s (now %s): check the clocks", what, leaf.Subject.CommonName, leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage {
			return nil, fmt.Errorf("%s %q: not valid for %s", what, leaf.Subject.CommonName, usageName(usage))
		}
		return nil, fmt.Errorf("%s %q: %w", what, leaf.Subject.CommonName, err)
	}
	return leaf, nil
}

func usageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageClientAuth:
		return "client authentication"
	case x509.ExtKeyUsageServerAuth:
		return "server authentication"
	}
	return fmt.Sprintf("extended key usage %d", u)
}
