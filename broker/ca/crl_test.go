package ca

import (
	"crypto/x509"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestCRL(t *testing.T) {
	a, dir := open(t)
	empty, err := a.CRL(DBClient)
	if err != nil {
		t.Fatal(err)
	}
	text := opensslText(t, "crl", empty)
	if !strings.Contains(text, "No Revoked Certificates") || !strings.Contains(text, "CN = Tollgate db-client CA") {
		t.Fatalf("empty CRL:\n%s", text)
	}

	c, _, err := a.IssueDBClient(ecKey(t).Public(), "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(DBClient, c.SerialNumber); err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(DBClient, c.SerialNumber); err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(DBClient, big.NewInt(0)); err == nil {
		t.Error("serial 0 accepted")
	}
	// Persisted: a reopened data dir lists the revocation.
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	der, err := b.CRL(DBClient)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	issuer, _ := a.Cert(DBClient)
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		t.Fatal(err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(c.SerialNumber) != 0 {
		t.Fatalf("revoked entries %+v", crl.RevokedCertificateEntries)
	}
	if !crl.NextUpdate.After(time.Now().Add(CRLValidity - time.Hour)) {
		t.Fatalf("NextUpdate %s", crl.NextUpdate)
	}
	text = opensslText(t, "crl", der)
	serialHex := strings.ToUpper(c.SerialNumber.Text(16))
	if !strings.Contains(strings.ReplaceAll(text, ":", ""), serialHex) {
		t.Fatalf("openssl does not list serial %s:\n%s", serialHex, text)
	}
	// The CRL number increases from one CRL to the next.
	if crl2, _ := x509.ParseRevocationList(empty); crl2.Number.Cmp(crl.Number) >= 0 {
		t.Fatalf("CRL number did not increase: %s then %s", crl2.Number, crl.Number)
	}
	// Other authorities have their own (empty) lists.
	u, err := b.CRL(User)
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := x509.ParseRevocationList(u); len(l.RevokedCertificateEntries) != 0 {
		t.Fatal("user CRL lists the db-client revocation")
	}
}
