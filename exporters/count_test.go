package exporters

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// eventCount agrees with SplitEvents on every shape of message: a single
// event, frames signed or not, empty, or with a last event lacking its
// newline.
func TestEventCount(t *testing.T) {
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
	cert, _ := x509.ParseCertificate(der)
	signer, err := events.NewSigner(key, cert)
	if err != nil {
		t.Fatal(err)
	}
	ev := func(i int) []byte {
		return fmt.Appendf(nil, `{"id":"e%d","type":"db.session.query","time":"2026-01-02T03:04:05Z","cluster":"c","sid":"s%d"}`, i, i%3)
	}
	frame := func(n int, s *events.Signer) []byte {
		evs := make([][]byte, n)
		for i := range evs {
			evs[i] = ev(i)
		}
		b, _, err := events.EncodeFrame(nil, events.FrameHeader{ID: "f", Src: "h1", Run: "r1", Prev: events.FrameGenesis("r1")}, evs, s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	unterminated := frame(3, nil)
	unterminated = unterminated[:len(unterminated)-1]
	cases := map[string][]byte{
		"single": ev(0), "frame of 1": frame(1, nil), "frame of 64": frame(64, nil), "signed frame of 5": frame(5, signer),
		"empty frame": frame(0, nil), "signed empty frame": frame(0, signer), "last event without newline": unterminated,
	}
	for name, data := range cases {
		n := 0
		if err := events.SplitEvents(data, func([]byte) error { n++; return nil }); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := eventCount(data); got != n {
			t.Errorf("%s: eventCount %d, SplitEvents %d", name, got, n)
		}
	}
}
