package events

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"reflect"
	"testing"
	"time"
)

// testSigner is a self-signed ECDSA signer: frames only need a key and
// its certificate.
func testSigner(t testing.TB) *Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "host"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(key, cert)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFrameRoundTrip(t *testing.T) {
	s := testSigner(t)
	evs := [][]byte{
		[]byte(`{"id":"a","type":"db.session.query","time":"2026-01-01T00:00:01Z","sid":"S1","ei":0}`),
		[]byte(`{"id":"b","type":"user.login","time":"2026-01-01T00:00:00Z"}`),
		[]byte(`{"id":"c","type":"db.session.result","time":"2026-01-01T00:00:02Z","sid":"S2","ei":4}`),
	}
	for _, signer := range []*Signer{nil, s} {
		data, hash, err := EncodeFrame(nil, FrameHeader{ID: "F1", Src: "h", Run: "r", Prev: FrameGenesis("r")}, evs, signer)
		if err != nil {
			t.Fatal(err)
		}
		if !IsFrame(data) {
			t.Fatal("not a frame")
		}
		f, err := DecodeFrame(data)
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Events) != 3 || !bytes.Equal(f.Events[1], evs[1]) || f.Header.N != 3 {
			t.Fatalf("events %q", f.Events)
		}
		if got := f.Hash(); got != hash {
			t.Fatalf("hash %s, encoder said %s", got, hash)
		}
		if f.Header.SIDs[0] != "S1" || f.Header.SIDs[1] != "S2" || len(f.Header.SIDs) != 2 {
			t.Fatalf("sids %v", f.Header.SIDs)
		}
		if !f.Header.First.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) || !f.Header.Last.Equal(time.Date(2026, 1, 1, 0, 0, 2, 0, time.UTC)) {
			t.Fatalf("first %s last %s", f.Header.First, f.Header.Last)
		}
		var split [][]byte
		if err := SplitEvents(data, func(ev []byte) error { split = append(split, ev); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(split) != 3 {
			t.Fatalf("split %d events", len(split))
		}
		if signer == nil {
			if f.Trailer != nil {
				t.Fatal("unsigned frame has a trailer")
			}
			continue
		}
		cert, err := ParseCert(f.Trailer.Cert)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifySignature(cert, f.Signed, f.Trailer.Sig); err != nil {
			t.Fatalf("verify: %v", err)
		}
		bad := bytes.Replace(data, []byte(`"user.login"`), []byte(`"user.logon"`), 1)
		g, err := DecodeFrame(bad)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifySignature(cert, g.Signed, g.Trailer.Sig); err == nil {
			t.Fatal("a changed frame verified")
		}
	}
}

func TestSingleEventMessage(t *testing.T) {
	ev := []byte(`{"id":"a","type":"user.login"}`)
	f, err := DecodeFrame(ev)
	if err != nil || f.Header != nil || len(f.Events) != 1 {
		t.Fatalf("%+v %v", f, err)
	}
}

func TestDecodeFrameCountMismatch(t *testing.T) {
	data, _, err := EncodeFrame(nil, FrameHeader{ID: "F"}, [][]byte{[]byte(`{"id":"a"}`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, []byte("{\"id\":\"b\"}\n")...)
	if _, err := DecodeFrame(data); err == nil {
		t.Fatal("a frame with an event more than its header says decoded")
	}
}

func TestUnsealed(t *testing.T) {
	plain := []byte(`{"id":"a","sid":"S","ei":3,"prev":"x","signer":"CERT"}`)
	sealed := append(append([]byte{}, plain[:len(plain)-1]...), []byte(`,"seal":"SIG"}`)...)
	u, seal := Unsealed(sealed)
	if seal != "SIG" || !bytes.Equal(u, plain) {
		t.Fatalf("unsealed %s seal %q", u, seal)
	}
	if EventHash(sealed) != Hash(plain) {
		t.Fatal("the hash of a sealed event is not the hash of its unsealed bytes")
	}
	if u, seal := Unsealed(plain); seal != "" || !bytes.Equal(u, plain) {
		t.Fatal("an event without a seal changed")
	}
}

// BenchmarkChainHash is what chaining adds per event: the SHA-256 of its
// encoding (the 400-byte query of DESIGN.md's budget).
func BenchmarkChainHash(b *testing.B) {
	ev := queryEvent("01JBENCHSESSION00000000000", 0)
	if err := Stamp(ev, "bench"); err != nil {
		b.Fatal(err)
	}
	data, err := appendEvent(nil, ev)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		_ = Hash(data)
	}
}

// BenchmarkSignFrame is what signing adds per frame (ECDSA P-256 over the
// frame's SHA-256), and so per event divided by the events of a frame.
func BenchmarkSignFrame(b *testing.B) {
	s := testSigner(b)
	frame := make([]byte, 64*420)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSealSession is what sealing adds to a session's end event.
func BenchmarkSealSession(b *testing.B) {
	s := testSigner(b)
	end := &SessionEnd{Session: Session{SID: "01JBENCHSESSION00000000000", EI: 9}}
	if err := Stamp(end, "bench"); err != nil {
		b.Fatal(err)
	}
	data, err := appendEvent(nil, end)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := seal(append(buf[:0], data...), s); err != nil {
			b.Fatal(err)
		}
	}
}

// The hand-written header is what encoding/json writes for the same
// header, so any JSON reader decodes it.
func TestFrameHeaderEncoding(t *testing.T) {
	for _, h := range []FrameHeader{
		{Version: 1, ID: "F", Src: "h", Run: "r", Prev: "p"},
		{Version: 1, ID: "F\"\\\n", Src: "é<>&", Run: "r", FSeq: 42, Prev: "p", N: 3,
			First: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Last: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC),
			SIDs: []string{"a", "b"}, StateSeq: 7},
	} {
		want, err := json.Marshal(&h)
		if err != nil {
			t.Fatal(err)
		}
		// encoding/json escapes <, > and &; both are the same JSON.
		var a, b FrameHeader
		if err := json.Unmarshal(want, &a); err != nil {
			t.Fatal(err)
		}
		got := appendFrameHeader(nil, &h)
		if err := json.Unmarshal(got, &b); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("got %s, encoding/json %s", got, want)
		}
	}
}
