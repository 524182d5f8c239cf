package ca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// OIDs of the Kerberos and Active Directory names and usages in db-client
// certificates.
var (
	// OIDSubjectAltName is the X.509 subjectAltName extension (2.5.29.17).
	OIDSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	// OIDUPN is Microsoft's User Principal Name otherName (szOID_NT_PRINCIPAL_NAME).
	OIDUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}
	// OIDPKINITSAN is id-pkinit-san of RFC 4556: a KRB5PrincipalName otherName.
	OIDPKINITSAN = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 2, 2}

	oidKPPKINITClientAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 2, 3, 4}          // id-pkinit-KPClientAuth
	oidKPMSSmartcardLogin = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 2} // szOID_KP_SMARTCARD_LOGON
)

// ntPrincipal is the Kerberos name type of a user (KRB5-NT-PRINCIPAL).
const ntPrincipal = 1

// Principal is a Kerberos principal: realm and name components.
type Principal struct {
	Realm      string
	Components []string
}

// String is the usual "comp/comp@REALM" form.
func (p Principal) String() string { return strings.Join(p.Components, "/") + "@" + p.Realm }

// parsePrincipal splits name on '/' into components. Both name and realm
// must be KerberosStrings (printable ASCII); the realm is given separately,
// so '@' may not appear in name.
func parsePrincipal(name, realm string) (Principal, error) {
	if err := kerberosString("realm", realm); err != nil {
		return Principal{}, err
	}
	if strings.ContainsAny(realm, "/@") {
		return Principal{}, fmt.Errorf("ca: Kerberos realm %q contains '/' or '@'", realm)
	}
	if strings.Contains(name, "@") {
		return Principal{}, fmt.Errorf("ca: Kerberos principal name %q contains '@': give the realm separately", name)
	}
	comps := strings.Split(name, "/")
	for _, c := range comps {
		if err := kerberosString("principal name component", c); err != nil {
			return Principal{}, fmt.Errorf("%w (in %q)", err, name)
		}
	}
	return Principal{Realm: realm, Components: comps}, nil
}

func kerberosString(what, s string) error {
	if s == "" {
		return fmt.Errorf("ca: empty Kerberos %s", what)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return fmt.Errorf("ca: Kerberos %s %q has a character outside printable ASCII", what, s)
		}
	}
	return nil
}

// sanBuilder collects otherName SANs, which crypto/x509 cannot write: the
// whole subjectAltName extension is then built here.
type sanBuilder struct {
	upns   []string
	pkinit []Principal
}

var (
	tagOtherName = cbasn1.Tag(0).ContextSpecific().Constructed()
	tagExplicit0 = cbasn1.Tag(0).ContextSpecific().Constructed()
	tagExplicit1 = cbasn1.Tag(1).ContextSpecific().Constructed()
	// tagGeneralString is KerberosString's universal tag (27), which
	// encoding/asn1 cannot write.
	tagGeneralString = cbasn1.Tag(27)
)

// extension returns the subjectAltName extension, ok false when there is
// nothing to put in it.
func (s *sanBuilder) extension() (pkix.Extension, bool, error) {
	if len(s.upns) == 0 && len(s.pkinit) == 0 {
		return pkix.Extension{}, false, nil
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // GeneralNames
		for _, upn := range s.upns {
			b.AddASN1(tagOtherName, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(OIDUPN)
				b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(upn)) })
				})
			})
		}
		for _, p := range s.pkinit {
			b.AddASN1(tagOtherName, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(OIDPKINITSAN)
				b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
					addKRB5PrincipalName(b, p)
				})
			})
		}
	})
	der, err := b.Bytes()
	if err != nil {
		return pkix.Extension{}, false, fmt.Errorf("ca: encode subjectAltName: %w", err)
	}
	return pkix.Extension{Id: OIDSubjectAltName, Value: der}, true, nil
}

// addKRB5PrincipalName writes, per RFC 4556 §3.2.2 and RFC 4120 (explicit
// tags):
//
//	KRB5PrincipalName ::= SEQUENCE {
//	    realm         [0] Realm,           -- GeneralString
//	    principalName [1] PrincipalName }
//	PrincipalName ::= SEQUENCE {
//	    name-type     [0] Int32,
//	    name-string   [1] SEQUENCE OF KerberosString }
func addKRB5PrincipalName(b *cryptobyte.Builder, p Principal) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
			b.AddASN1(tagGeneralString, func(b *cryptobyte.Builder) { b.AddBytes([]byte(p.Realm)) })
		})
		b.AddASN1(tagExplicit1, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { b.AddASN1Int64(ntPrincipal) })
				b.AddASN1(tagExplicit1, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						for _, c := range p.Components {
							b.AddASN1(tagGeneralString, func(b *cryptobyte.Builder) { b.AddBytes([]byte(c)) })
						}
					})
				})
			})
		})
	})
}

// PKINITPrincipals returns the principals of the id-pkinit-san names in
// cert, the way a KDC reads them.
func PKINITPrincipals(cert *x509.Certificate) ([]Principal, error) {
	var out []Principal
	err := forEachOtherName(cert, func(oid asn1.ObjectIdentifier, val cryptobyte.String) error {
		if !oid.Equal(OIDPKINITSAN) {
			return nil
		}
		var seq, realmT, nameT, nameSeq, typeT, strsT, strs cryptobyte.String
		var realm cryptobyte.String
		var nt int64
		if !val.ReadASN1(&seq, cbasn1.SEQUENCE) || !val.Empty() ||
			!seq.ReadASN1(&realmT, tagExplicit0) || !realmT.ReadASN1(&realm, tagGeneralString) ||
			!seq.ReadASN1(&nameT, tagExplicit1) || !nameT.ReadASN1(&nameSeq, cbasn1.SEQUENCE) ||
			!nameSeq.ReadASN1(&typeT, tagExplicit0) || !typeT.ReadASN1Int64WithTag(&nt, cbasn1.INTEGER) ||
			!nameSeq.ReadASN1(&strsT, tagExplicit1) || !strsT.ReadASN1(&strs, cbasn1.SEQUENCE) {
			return fmt.Errorf("ca: malformed KRB5PrincipalName")
		}
		p := Principal{Realm: string(realm)}
		for !strs.Empty() {
			var c cryptobyte.String
			if !strs.ReadASN1(&c, tagGeneralString) {
				return fmt.Errorf("ca: malformed KRB5PrincipalName name-string")
			}
			p.Components = append(p.Components, string(c))
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// UPNs returns the Microsoft UPN otherNames in cert.
func UPNs(cert *x509.Certificate) ([]string, error) {
	var out []string
	err := forEachOtherName(cert, func(oid asn1.ObjectIdentifier, val cryptobyte.String) error {
		if !oid.Equal(OIDUPN) {
			return nil
		}
		var s cryptobyte.String
		if !val.ReadASN1(&s, cbasn1.UTF8String) {
			return fmt.Errorf("ca: malformed UPN")
		}
		out = append(out, string(s))
		return nil
	})
	return out, err
}

func forEachOtherName(cert *x509.Certificate, fn func(asn1.ObjectIdentifier, cryptobyte.String) error) error {
	for _, e := range cert.Extensions {
		if !e.Id.Equal(OIDSubjectAltName) {
			continue
		}
		in := cryptobyte.String(e.Value)
		var names cryptobyte.String
		if !in.ReadASN1(&names, cbasn1.SEQUENCE) {
			return fmt.Errorf("ca: malformed subjectAltName")
		}
		for !names.Empty() {
			var gn cryptobyte.String
			var tag cbasn1.Tag
			if !names.ReadAnyASN1(&gn, &tag) {
				return fmt.Errorf("ca: malformed subjectAltName")
			}
			if tag != tagOtherName {
				continue
			}
			var oid asn1.ObjectIdentifier
			var val cryptobyte.String
			if !gn.ReadASN1ObjectIdentifier(&oid) || !gn.ReadASN1(&val, tagExplicit0) {
				return fmt.Errorf("ca: malformed otherName")
			}
			if err := fn(oid, val); err != nil {
				return err
			}
		}
	}
	return nil
}
