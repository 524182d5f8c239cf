package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// An exporter's file verifies like the stream: copies delivered twice are
// no defect, a line taken out is.
func TestAuditVerifyFile(t *testing.T) {
	var lines []string
	for i, typ := range []string{"db.session.start", "db.session.query", "db.session.result", "db.session.end"} {
		lines = append(lines, fmt.Sprintf(`{"id":"e%d","type":%q,"sid":"s1","ei":%d}`, i, typ, i))
	}
	write := func(ls []string) string {
		p := filepath.Join(t.TempDir(), "audit.jsonl")
		if err := os.WriteFile(p, []byte(strings.Join(ls, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sum, err := verifyFile(auditVerifyFlags{file: write(append(lines, lines[1]))})
	if err != nil || !sum.Intact() || sum.Duplicates != 1 || sum.Ended != 1 {
		t.Fatalf("%v %+v", err, sum)
	}
	sum, err = verifyFile(auditVerifyFlags{file: write(append(lines[:2:2], lines[3]))})
	if err != nil || sum.Intact() || !strings.Contains(sum.Defects[0].String(), "ei 2 to 2 are missing") {
		t.Fatalf("%v %+v", err, sum)
	}
	if _, err := verifyFile(auditVerifyFlags{file: "x", session: "s"}); err == nil {
		t.Fatal("--file with --session accepted")
	}
}

// A sealed session exported as CloudEvents verifies offline against the
// host CA file; a statement changed in the copy is named; a data dir
// without a host CA is refused for the live stream.
func TestAuditVerifyFileSealed(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "host CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	signer, err := events.NewSigner(key, cert)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "host-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	var lines []string
	prev := events.ChainGenesis("s1")
	for i, typ := range []string{"db.session.start", "db.session.query", "db.session.end"} {
		ev := fmt.Appendf(nil, `{"id":"e%d","type":%q,"time":%q,"sid":"s1","ei":%d,"prev":%q,"db_query":"select 1"`, i, typ, time.Now().UTC().Format(time.RFC3339Nano), i, prev)
		if i == 2 {
			ev = fmt.Appendf(ev, `,"signer":%q`, signer.CertB64())
			sig, err := signer.Sign(append(ev[:len(ev):len(ev)], '}'))
			if err != nil {
				t.Fatal(err)
			}
			ev = fmt.Appendf(ev, `,"seal":%q}`, sig)
		} else {
			ev = append(ev, '}')
		}
		prev = events.EventHash(ev)
		lines = append(lines, fmt.Sprintf(`{"specversion":"1.0","id":"e%d","type":"tollgate.%s","data":%s}`, i, typ, ev))
	}
	write := func(ls []string) string {
		p := filepath.Join(t.TempDir(), "audit.jsonl")
		if err := os.WriteFile(p, []byte(strings.Join(ls, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sum, err := verifyFile(auditVerifyFlags{file: write(lines), hostCA: caFile, strict: true})
	if err != nil || !sum.Intact() || sum.Sealed != 1 {
		t.Fatalf("%v %s %v", err, sum.Line(), sum.Defects)
	}
	// Without the host CA the chain is checked, the seal is not.
	if sum, err := verifyFile(auditVerifyFlags{file: write(lines)}); err != nil || !sum.Intact() || sum.Unchecked != 1 {
		t.Fatalf("%v %s", err, sum.Line())
	}
	lines[1] = strings.Replace(lines[1], "select 1", "select 2", 1)
	sum, err = verifyFile(auditVerifyFlags{file: write(lines), hostCA: caFile})
	if err != nil || sum.Intact() || !strings.Contains(sum.Defects[0].String(), "event e2 session s1 ei 2: prev matches no event of the session: the event before it (ei 1, event e1) was changed") {
		t.Fatalf("%v %s %v", err, sum.Line(), sum.Defects)
	}
	if _, err := streamHostCA(auditVerifyFlags{}, t.TempDir()); err == nil || !strings.Contains(err.Error(), "--host-ca") {
		t.Fatalf("data dir without a host CA: %v", err)
	}
}
