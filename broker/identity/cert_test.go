package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sample() Identity {
	return Identity{
		User:           "alice",
		Roles:          []string{"access", "dba"},
		Traits:         map[string][]string{TraitDBUsers: {"alice", "readonly"}, TraitDBNames: {"*"}},
		AccessRequests: []string{"01J0REQ"},
	}
}

// selfSigned makes a certificate carrying exts, to exercise decoding
// without the CA package.
func selfSigned(t *testing.T, cn string, exts ...pkix.Extension) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(1),
		Subject:         pkix.Name{CommonName: cn},
		NotBefore:       time.Now().Add(-time.Minute),
		NotAfter:        time.Now().Add(time.Hour).Truncate(time.Second),
		ExtraExtensions: exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestExtensionRoundTrip(t *testing.T) {
	id := sample()
	ext, err := Extension(id)
	if err != nil {
		t.Fatal(err)
	}
	if !ext.Id.Equal(OIDIdentity) || ext.Critical {
		t.Fatalf("extension id %v critical %v", ext.Id, ext.Critical)
	}
	// The value is a DER UTF8String (tag 12), not bare JSON.
	if ext.Value[0] != asn1.TagUTF8String {
		t.Fatalf("value starts with tag %d, want UTF8String", ext.Value[0])
	}
	c := selfSigned(t, "alice", ext)
	got, err := FromCertificate(c)
	if err != nil {
		t.Fatal(err)
	}
	id.Expires, id.Issued = c.NotAfter, c.NotBefore
	if !reflect.DeepEqual(got, id) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, id)
	}
}

func TestFromCertificateRefuses(t *testing.T) {
	ext, err := Extension(sample())
	if err != nil {
		t.Fatal(err)
	}
	notJSON, _ := asn1.MarshalWithParams("{not json", "utf8")
	other := Identity{User: "mallory", Roles: []string{"access"}}
	otherExt, _ := Extension(other)
	cases := []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"no extension", selfSigned(t, "alice"), "no identity extension"},
		{"cn differs", selfSigned(t, "bob", ext), `names user "alice" but the certificate's common name is "bob"`},
		{"bad json", selfSigned(t, "alice", pkix.Extension{Id: OIDIdentity, Value: notJSON}), "extension JSON"},
		{"not der", selfSigned(t, "alice", pkix.Extension{Id: OIDIdentity, Value: []byte(`{"user":"alice"}`)}), "not a DER UTF8String"},
		{"mallory cn alice", selfSigned(t, "alice", otherExt), `names user "mallory"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromCertificate(tc.cert)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
	if _, err := FromCertificate(nil); err == nil {
		t.Fatal("nil certificate accepted")
	}
}

func TestExtensionRefusesBadNames(t *testing.T) {
	for _, id := range []Identity{
		{},
		{User: "al\nice"},
		{User: "alice", Roles: []string{""}},
		{User: "alice", Traits: map[string][]string{"db_users": {"x\x00"}}},
		{User: "alice", Roles: []string{strings.Repeat("r", 2000)}},
	} {
		if _, err := Extension(id); err == nil {
			t.Errorf("Extension(%+v) accepted", id)
		}
	}
}

func FuzzDecodeExtension(f *testing.F) {
	ext, _ := Extension(sample())
	f.Add(ext.Value)
	min, _ := asn1.MarshalWithParams(`{"user":"a","roles":[]}`, "utf8")
	f.Add(min)
	f.Add([]byte{0x0c, 0x00})
	f.Add([]byte{0x0c, 0x81})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := decodeExtension(b)
		if err != nil {
			return
		}
		// Anything accepted must encode again and decode to the same.
		ext, err := Extension(id)
		if err != nil {
			t.Fatalf("decoded %+v but cannot encode it: %v", id, err)
		}
		id2, err := decodeExtension(ext.Value)
		if err != nil || !reflect.DeepEqual(normal(id), normal(id2)) {
			t.Fatalf("re-decode: %v\n%+v\n%+v", err, id, id2)
		}
	})
}

// normal makes nil and empty collections compare equal.
func normal(id Identity) Identity {
	if len(id.Roles) == 0 {
		id.Roles = nil
	}
	if len(id.Traits) == 0 {
		id.Traits = nil
	}
	if len(id.AccessRequests) == 0 {
		id.AccessRequests = nil
	}
	return id
}
