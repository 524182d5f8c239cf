package ca

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// CRLValidity is the NextUpdate distance of a CRL. It is long because CRLs
// are published by hand (into Active Directory, onto a database host) and a
// lapsed CRL makes Windows and OpenSSL refuse every certificate of the CA;
// a revocation is effective once the new CRL is published, whatever this is.
const CRLValidity = 365 * 24 * time.Hour

// Revocation is one revoked certificate.
type Revocation struct {
	Serial    *big.Int  `json:"-"`
	SerialHex string    `json:"serial"`
	RevokedAt time.Time `json:"revoked_at"`
}

func revokedPath(dir string, t Type) string { return filepath.Join(dir, string(t)+".revoked") }

// Revoke adds serial to the revocation list of t, kept in
// <data_dir>/ca/<type>.revoked so that every later CRL of t lists it.
// Revoking a serial twice keeps the first revocation time.
func (a *Authorities) Revoke(t Type, serial *big.Int) error {
	if _, err := a.get(t); err != nil {
		return err
	}
	if serial == nil || serial.Sign() <= 0 {
		return errors.New("ca: revoke: serial must be a positive number")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	unlock, err := lockDir(a.dir)
	if err != nil {
		return err
	}
	defer unlock()
	list, err := a.readRevoked(t)
	if err != nil {
		return err
	}
	for _, r := range list {
		if r.Serial.Cmp(serial) == 0 {
			return nil
		}
	}
	list = append(list, Revocation{Serial: serial, SerialHex: serial.Text(16), RevokedAt: time.Now().UTC()})
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return writeAtomic(revokedPath(a.dir, t), append(data, '\n'), 0o600)
}

// Revoked returns the revocation list of t, oldest first.
func (a *Authorities) Revoked(t Type) ([]Revocation, error) {
	if _, err := a.get(t); err != nil {
		return nil, err
	}
	return a.readRevoked(t)
}

func (a *Authorities) readRevoked(t Type) ([]Revocation, error) {
	p := revokedPath(a.dir, t)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	var list []Revocation
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("ca: %s: %w", p, err)
	}
	for i := range list {
		s, ok := new(big.Int).SetString(list[i].SerialHex, 16)
		if !ok || s.Sign() <= 0 {
			return nil, fmt.Errorf("ca: %s: entry %d: serial %q is not a positive hex number", p, i, list[i].SerialHex)
		}
		list[i].Serial = s
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].RevokedAt.Before(list[j].RevokedAt) })
	return list, nil
}

// CRL returns a freshly signed DER CRL (RFC 5280, v2) of t listing every
// revoked serial. Its CRL number is the issue time in nanoseconds, which
// keeps numbers increasing across processes without shared state.
func (a *Authorities) CRL(t Type) ([]byte, error) {
	ca, err := a.get(t)
	if err != nil {
		return nil, err
	}
	list, err := a.readRevoked(t)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(now.UnixNano()),
		ThisUpdate: now.Add(-backdate),
		NextUpdate: now.Add(CRLValidity),
	}
	for _, r := range list {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   r.Serial,
			RevocationTime: r.RevokedAt,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.cert, ca.signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign %s CRL: %w", t, err)
	}
	return der, nil
}
