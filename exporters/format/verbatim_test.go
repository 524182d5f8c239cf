package format_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters/format"
)

// sealedEnd is a session's last event as the writer stores it: chained to
// the previous one and sealed, with text that JSON encoders like to
// escape.
func sealedEnd(t *testing.T) (ev []byte, s *events.Signer) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "h1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if s, err = events.NewSigner(key, cert); err != nil {
		t.Fatal(err)
	}
	end := &events.SessionEnd{Session: events.Session{SID: "01HSESSION", EI: 9},
		Database: events.Database{Service: "pg-main", Protocol: "postgres"}, Reason: `client closed <"é" & 🙂>`}
	end.Envelope.User = "alice"
	if err := events.Stamp(end, "prod"); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(end)
	if err != nil {
		t.Fatal(err)
	}
	// The chain and signer members, then the seal over the rest.
	b = append(b[:len(b)-1], `,"prev":"`+events.ChainGenesis("01HSESSION")+`","signer":"`+s.CertB64()+`"}`...)
	seal, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	return append(b[:len(b)-1], `,"seal":"`+seal+`"}`...), s
}

// An OCSF copy of a sealed event carries the event's bytes, so its seal
// and its place in the chain verify from the copy alone.
func TestOCSFCarriesTheEventVerbatim(t *testing.T) {
	ev, s := sealedEnd(t)
	env, err := format.Scan(ev)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := format.New(format.OCSF, format.Options{})
	out, err := f.Append(nil, &env, ev)
	if err != nil {
		t.Fatal(err)
	}
	var o struct {
		Unmapped map[string]json.RawMessage `json:"unmapped"`
	}
	if err := json.Unmarshal(out, &o); err != nil {
		t.Fatal(err)
	}
	var copied string
	if err := json.Unmarshal(o.Unmapped[format.OCSFEventField], &copied); err != nil {
		t.Fatalf("unmapped.%s: %v in %s", format.OCSFEventField, err, out)
	}
	if copied != string(ev) {
		t.Fatalf("unmapped.%s is not the event's bytes:\n%s\n%s", format.OCSFEventField, copied, ev)
	}
	if events.EventHash([]byte(copied)) != events.EventHash(ev) {
		t.Fatal("the copy hashes differently")
	}
	unsealed, seal := events.Unsealed([]byte(copied))
	if seal == "" {
		t.Fatal("the copy lost its seal")
	}
	if err := events.VerifySignature(s.Cert, unsealed, seal); err != nil {
		t.Fatalf("the seal does not verify from the OCSF copy: %v", err)
	}
}

// CloudEvents' data is the event byte for byte, seal included.
func TestCloudEventsCarriesTheEventVerbatim(t *testing.T) {
	ev, s := sealedEnd(t)
	env, err := format.Scan(ev)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := format.New(format.CloudEvents, format.Options{})
	out, err := f.Append(nil, &env, ev)
	if err != nil {
		t.Fatal(err)
	}
	var ce struct{ Data json.RawMessage }
	if err := json.Unmarshal(out, &ce); err != nil {
		t.Fatal(err)
	}
	if string(ce.Data) != string(ev) {
		t.Fatalf("data is not the event's bytes:\n%s\n%s", ce.Data, ev)
	}
	unsealed, seal := events.Unsealed(ce.Data)
	if err := events.VerifySignature(s.Cert, unsealed, seal); err != nil {
		t.Fatalf("the seal does not verify from the CloudEvents copy: %v", err)
	}
}
