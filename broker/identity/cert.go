package identity

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// OIDArc is the private OID arc under which Tollgate puts its own certificate
// extensions.
//
// Tollgate has no IANA Private Enterprise Number yet, so the arc is an
// unregistered enterprise number chosen well above the range IANA has
// assigned so far. The often-suggested 1.3.6.1.4.1.57264 is avoided on
// purpose: it is Sigstore's registered number, and Fulcio certificates carry
// 1.3.6.1.4.1.57264.1.x extensions of their own. A collision could not grant
// anything (the extension is only ever read from certificates that Tollgate's
// own CA signed), but tools that decode those OIDs would mislabel ours. When
// a PEN is registered, only this constant changes.
var OIDArc = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}

// OIDIdentity is the extension that carries an Identity in a user
// certificate: 1.3.6.1.4.1.99999.1.1. Its value is the DER encoding of a
// UTF8String holding the Identity as JSON.
var OIDIdentity = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1, 1}

// MaxExtensionSize bounds the identity extension: a certificate is sent in
// every handshake, and a decoder should not accept arbitrarily large input.
const MaxExtensionSize = 64 << 10

// Extension encodes id as the non-critical certificate extension
// OIDIdentity. It is non-critical so that generic TLS stacks (Go's
// tls.Config.VerifyPeerCertificate chain building, OpenSSL) still accept the
// certificate; Tollgate's verifier reads it.
func Extension(id Identity) (pkix.Extension, error) {
	if err := checkIdentity(id); err != nil {
		return pkix.Extension{}, err
	}
	js, err := json.Marshal(id)
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("identity: encode: %w", err)
	}
	val, err := asn1.MarshalWithParams(string(js), "utf8")
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("identity: encode: %w", err)
	}
	if len(val) > MaxExtensionSize {
		return pkix.Extension{}, fmt.Errorf("identity: encoded identity is %d bytes, more than %d (too many roles or traits)", len(val), MaxExtensionSize)
	}
	return pkix.Extension{Id: OIDIdentity, Value: val}, nil
}

// FromCertificate reads the Identity out of a user certificate. It does not
// verify the certificate: callers verify the chain first (ca.VerifyUser does
// both). Expires is the certificate's NotAfter, Issued its NotBefore, and
// the identity's user must be the certificate's common name.
func FromCertificate(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, errors.New("identity: no certificate")
	}
	var found *pkix.Extension
	for i := range cert.Extensions {
		if cert.Extensions[i].Id.Equal(OIDIdentity) {
			if found != nil {
				return Identity{}, fmt.Errorf("identity: certificate %q has the identity extension %s twice", cert.Subject.CommonName, OIDIdentity)
			}
			found = &cert.Extensions[i]
		}
	}
	if found == nil {
		return Identity{}, fmt.Errorf("identity: certificate %q has no identity extension %s (not a Tollgate user certificate)", cert.Subject.CommonName, OIDIdentity)
	}
	id, err := decodeExtension(found.Value)
	if err != nil {
		return Identity{}, err
	}
	if id.User != cert.Subject.CommonName {
		return Identity{}, fmt.Errorf("identity: extension names user %q but the certificate's common name is %q", id.User, cert.Subject.CommonName)
	}
	id.Expires, id.Issued = cert.NotAfter, cert.NotBefore
	if m := id.MFASession; m != nil && m.LoginExpires.After(id.Expires) {
		id.Expires = m.LoginExpires
	}
	return id, nil
}

// decodeExtension is the inverse of Extension's value encoding.
func decodeExtension(val []byte) (Identity, error) {
	if len(val) > MaxExtensionSize {
		return Identity{}, fmt.Errorf("identity: extension is %d bytes, more than %d", len(val), MaxExtensionSize)
	}
	var s string
	rest, err := asn1.UnmarshalWithParams(val, &s, "utf8")
	if err != nil {
		return Identity{}, fmt.Errorf("identity: extension is not a DER UTF8String: %w", err)
	}
	if len(rest) > 0 {
		return Identity{}, fmt.Errorf("identity: %d trailing bytes after the extension value", len(rest))
	}
	var id Identity
	if err := json.Unmarshal([]byte(s), &id); err != nil {
		return Identity{}, fmt.Errorf("identity: extension JSON: %w", err)
	}
	if err := checkIdentity(id); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// checkIdentity refuses names that could not be printed safely in logs or
// events, or that are empty.
func checkIdentity(id Identity) error {
	if err := checkName("user", id.User); err != nil {
		return err
	}
	for _, r := range id.Roles {
		if err := checkName("role", r); err != nil {
			return err
		}
	}
	for k, vs := range id.Traits {
		if err := checkName("trait name", k); err != nil {
			return err
		}
		for _, v := range vs {
			if err := checkText("trait "+k+" value", v); err != nil {
				return err
			}
		}
	}
	if m := id.MFASession; m != nil {
		if err := checkName("mfa_session database", m.Database); err != nil {
			return err
		}
		if err := checkName("mfa_session db_user", m.DBUser); err != nil {
			return err
		}
		if err := checkText("mfa_session method", m.Method); err != nil {
			return err
		}
	}
	for _, r := range id.AccessRequests {
		if err := checkName("access request id", r); err != nil {
			return err
		}
	}
	return nil
}

func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("identity: empty %s", what)
	}
	return checkText(what, s)
}

func checkText(what, s string) error {
	if len(s) > 1024 {
		return fmt.Errorf("identity: %s is %d bytes, more than 1024", what, len(s))
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("identity: %s %q is not valid UTF-8", what, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("identity: %s %q contains a control character", what, s)
		}
	}
	return nil
}
