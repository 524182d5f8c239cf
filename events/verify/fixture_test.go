package verify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// t0 is when the fixtures' sessions begin: inside every test
// certificate's validity.
var t0 = time.Now().UTC().Truncate(time.Second).Add(-10 * time.Minute)

// testCA is a throwaway host CA: its certificate and a signer it issued.
type testCA struct {
	cert   *x509.Certificate
	signer *events.Signer
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " host CA"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + "-agent"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(12 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	s, err := events.NewSigner(key, cert)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: caCert, signer: s}
}

// chainedSession writes a whole session of n events as the publisher
// does: each linked to the one before, the end sealed by s. pad makes
// the events the size of real ones.
func chainedSession(t testing.TB, s *events.Signer, sid string, n int, at time.Time, pad string) [][]byte {
	t.Helper()
	var out [][]byte
	prev := events.ChainGenesis(sid)
	for i := range n {
		typ := "db.session.query"
		switch i {
		case 0:
			typ = typeStart
		case n - 1:
			typ = typeEnd
		}
		ev := fmt.Appendf(nil, `{"id":"%s-%d","type":%q,"code":"TGDB002I","time":%q,"cluster":"c","sid":%q,"ei":%d,"prev":%q`,
			sid, i, typ, at.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano), sid, i, prev)
		if pad != "" {
			ev = fmt.Appendf(ev, `,"db_query":%q`, pad)
		}
		if typ == typeEnd {
			ev = seal(t, s, ev)
		} else {
			ev = append(ev, '}')
		}
		prev = events.EventHash(ev)
		out = append(out, ev)
	}
	return out
}

// seal closes an open event (no final '}') with signer and seal.
func seal(t testing.TB, s *events.Signer, open []byte) []byte {
	t.Helper()
	open = fmt.Appendf(open, `,"signer":%q`, s.CertB64())
	sig, err := s.Sign(append(open[:len(open):len(open)], '}'))
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Appendf(open, `,"seal":%q}`, sig)
}

// frames packs evs into frames of per events, one writer run, signed by
// s (nil: unsigned).
func frames(t testing.TB, s *events.Signer, src, run string, evs [][]byte, per int) [][]byte {
	t.Helper()
	var out [][]byte
	prev := events.FrameGenesis(run)
	for i, fseq := 0, uint64(0); i < len(evs); i, fseq = i+per, fseq+1 {
		f, hash, err := events.EncodeFrame(nil, events.FrameHeader{ID: fmt.Sprintf("F-%s-%d", run, fseq), Src: src, Run: run, FSeq: fseq, Prev: prev},
			evs[i:min(i+per, len(evs))], s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
		prev = hash
	}
	return out
}

// rawFrame writes a frame whose header is h exactly as given (a forger's),
// signed by s.
func rawFrame(t testing.TB, s *events.Signer, h events.FrameHeader, evs [][]byte) []byte {
	t.Helper()
	h.Version = events.FrameVersion
	hb, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	b := append(hb, '\n')
	for _, ev := range evs {
		b = append(append(b, ev...), '\n')
	}
	sig, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Appendf(b, `{"sig":%q,"cert":%q}`, sig, s.CertB64())
}

// checkMessages runs a Checker over AUDIT messages stored at sequences
// 1, 2, ….
func checkMessages(o Options, msgs [][]byte) Summary {
	o.Sequenced = true
	c := New(o)
	for i, m := range msgs {
		c.Add(uint64(i+1), m)
	}
	return c.Finish()
}

func defectLines(s Summary) string {
	var all []string
	for _, d := range s.Defects {
		all = append(all, d.String())
	}
	return strings.Join(all, "\n")
}

// mustFind fails unless a defect line holds every one of want.
func mustFind(t *testing.T, s Summary, want ...string) {
	t.Helper()
	if s.Intact() {
		t.Fatalf("no defect found: %s", s.Line())
	}
	for _, line := range strings.Split(defectLines(s), "\n") {
		all := true
		for _, w := range want {
			all = all && strings.Contains(line, w)
		}
		if all {
			return
		}
	}
	t.Fatalf("no defect names all of %q:\n%s", want, defectLines(s))
}
