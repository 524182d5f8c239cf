package admin

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
)

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("admin: issued certificate is not PEM")
	}
	return x509.ParseCertificate(blk.Bytes)
}
