package state

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"slices"

	"github.com/tollgate-db/tollgate/events"
)

// PublishCA records the public certificates of a certificate authority
// (user, host, db or db-client). certPEM must hold only CERTIFICATE blocks
// that parse: a private key handed over by mistake is refused here rather
// than stored forever in a stream that is exported.
func (s *Store) PublishCA(ctx context.Context, by Actor, caType, certPEM string) (CA, error) {
	if !caTypes[caType] {
		return CA{}, invalid("CA type %q (want user, host, db or db-client)", caType)
	}
	fps, err := certFingerprints([]byte(certPEM))
	if err != nil {
		return CA{}, invalid("CA %s: %v", caType, err)
	}
	_, err = s.change(ctx, by, subject(AggCA, caType), func() (events.Event, error) {
		if cur, ok := s.cas[caType]; ok && cur.CertPEM == certPEM {
			return nil, nil
		}
		return &events.CAPublish{CAType: caType, CertPEM: certPEM, Fingerprints: slices.Clone(fps)}, nil
	})
	if err != nil {
		return CA{}, err
	}
	c, _ := s.CA(caType)
	return c, nil
}

func certFingerprints(b []byte) ([]string, error) {
	var fps []string
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q: only CERTIFICATE blocks may be published", blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return nil, fmt.Errorf("certificate %d: %v", len(fps)+1, err)
		}
		sum := sha256.Sum256(blk.Bytes)
		fps = append(fps, hex.EncodeToString(sum[:]))
	}
	if len(bytes.TrimSpace(b)) > 0 {
		return nil, fmt.Errorf("data after the last PEM block")
	}
	if len(fps) == 0 {
		return nil, fmt.Errorf("no PEM certificate")
	}
	return fps, nil
}
