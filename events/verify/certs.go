package verify

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// signers checks the certificates frames and seals carry against the host
// CA. A writer signs every frame with the same certificate, so each
// distinct certificate is parsed and chained once and then only looked up.
type signers struct {
	root  *x509.Certificate // nil: signatures are not checked
	pool  *x509.CertPool
	cache map[string]*signer
}

type signer struct {
	cert *x509.Certificate
	err  error // why it does not chain to the host CA
}

func newSigners(root *x509.Certificate) *signers {
	s := &signers{root: root, cache: map[string]*signer{}}
	if root != nil {
		s.pool = x509.NewCertPool()
		s.pool.AddCert(root)
	}
	return s
}

// get returns the certificate b64 (DER, base64) when the host CA issued it
// and it was valid at t.
func (s *signers) get(b64 []byte, at time.Time) (*x509.Certificate, error) {
	e, ok := s.cache[string(b64)]
	if !ok {
		e = &signer{}
		e.cert, e.err = events.ParseCert(string(b64))
		if e.err == nil {
			// Any extended key usage: the host certificate is a TLS one;
			// what matters is who issued it.
			_, e.err = e.cert.Verify(x509.VerifyOptions{Roots: s.pool, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			if e.err != nil {
				e.err = fmt.Errorf("signer %q is not certified by the host CA: %w", e.cert.Subject.CommonName, e.err)
			}
		} else {
			e.err = fmt.Errorf("signer certificate unreadable: %w", e.err)
		}
		s.cache[string(b64)] = e
	}
	if e.err != nil {
		return nil, e.err
	}
	// The chain was checked at the first time this certificate was seen;
	// every later use must fall within its validity too.
	if at.Before(e.cert.NotBefore) || at.After(e.cert.NotAfter) {
		return nil, fmt.Errorf("signed at %s, outside the validity of signer %q (%s to %s)",
			at.UTC().Format(time.RFC3339), e.cert.Subject.CommonName, e.cert.NotBefore.UTC().Format(time.RFC3339), e.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return e.cert, nil
}

// verifyDigest is events.VerifySignature on a digest already computed:
// the checker hashes a frame's signed bytes once, for its signature and
// for the next frame's prev.
func verifyDigest(cert *x509.Certificate, sum []byte, sig string) error {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("signature is not base64: %w", err)
	}
	switch pub := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, sum, raw) {
			return errors.New("signature does not match")
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(pub, sum, raw) {
			return errors.New("signature does not match")
		}
	default:
		return fmt.Errorf("%T keys are not supported", cert.PublicKey)
	}
	return nil
}
