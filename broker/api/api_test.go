package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParsePin(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	for _, in := range []string{"sha256:" + hex, strings.ToUpper(hex), "SHA256:" + strings.ToUpper(strings.Repeat("ab:", 32))[:95]} {
		if got, err := ParsePin(in); err != nil || got != "sha256:"+hex {
			t.Errorf("ParsePin(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "sha256:abc", "md5:" + hex, "sha256:" + hex + "00"} {
		if _, err := ParsePin(in); err == nil {
			t.Errorf("ParsePin(%q) accepted", in)
		}
	}
}

func TestPublicKeyPEM(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := EncodePublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := DecodePublicKey(s)
	if err != nil || !k.PublicKey.Equal(pub) {
		t.Fatalf("round trip: %v", err)
	}
	for name, in := range map[string]string{
		"empty":     "",
		"not PEM":   "hello",
		"private":   strings.Replace(s, "PUBLIC KEY", "PRIVATE KEY", 2),
		"trailing":  s + "junk",
		"corrupted": strings.Replace(s, "M", "A", 3),
	} {
		if _, err := DecodePublicKey(in); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	var r LoginRequest
	if err := json.Unmarshal([]byte(`{"ttl":"90m"}`), &r); err != nil || r.TTL.Std() != 90*time.Minute {
		t.Fatalf("decode: %v %v", r.TTL, err)
	}
	if err := json.Unmarshal([]byte(`{"ttl":"soon"}`), &r); err == nil || !strings.Contains(err.Error(), "not a duration") {
		t.Fatalf("bad duration: %v", err)
	}
	b, _ := json.Marshal(AddTokenRequest{Type: "db", TTL: Duration(time.Hour)})
	if string(b) != `{"type":"db","ttl":"1h0m0s"}` {
		t.Fatalf("encode: %s", b)
	}
}

func TestServerName(t *testing.T) {
	if h, err := ServerName("[::1]:3080"); err != nil || h != "::1" {
		t.Fatalf("%q %v", h, err)
	}
	if _, err := ServerName("proxy.example.com"); err == nil {
		t.Fatal("address without port accepted")
	}
}
