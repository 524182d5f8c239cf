// Package samlidp starts a real SAML 2.0 identity provider on loopback for
// tests: crewjam/saml's samlidp server with its login form, users whose
// groups it sends as the eduPersonAffiliation attribute, and the service
// providers it answers. Respond makes responses with the provider's own
// key to requests the test captured, optionally altered, so that attacks
// on a service provider can be played with real, signed SAML.
package samlidp

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	"github.com/crewjam/saml/samlidp"
)

// User is a person the provider knows.
type User struct {
	Username, Password, Email string
	Groups                    []string
}

// SP is a service provider the provider answers: its entity id and ACS.
type SP struct {
	EntityID, ACS string
}

// Provider is a running identity provider.
type Provider struct {
	// MetadataURL is where it publishes its metadata.
	MetadataURL string
	// Metadata is the metadata document itself.
	Metadata []byte
	srv      *samlidp.Server
	users    map[string]User
}

// GroupsAttribute is the (friendly) name of the attribute that holds a
// user's groups.
const GroupsAttribute = "eduPersonAffiliation"

// Start runs a provider until the test ends.
func Start(tb testing.TB, sps []SP, users ...User) *Provider {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test idp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	base, _ := url.Parse("http://" + ln.Addr().String())
	srv, err := samlidp.New(samlidp.Options{URL: *base, Key: key, Certificate: cert, Store: &samlidp.MemoryStore{}})
	if err != nil {
		tb.Fatal(err)
	}
	p := &Provider{MetadataURL: base.String() + "/metadata", srv: srv, users: map[string]User{}}
	admin := func(method, path string, body []byte) {
		rec := httptest.NewRecorder()
		srv.Handler.ServeHTTP(rec, httptest.NewRequest(method, base.String()+path, bytes.NewReader(body)))
		if rec.Code/100 != 2 {
			tb.Fatalf("samlidp %s %s: %d %s", method, path, rec.Code, rec.Body)
		}
	}
	for i, u := range users {
		pw := u.Password
		b, _ := json.Marshal(samlidp.User{Name: u.Username, PlaintextPassword: &pw, Email: u.Email, Groups: u.Groups})
		admin(http.MethodPut, "/users/"+u.Username, b)
		p.users[u.Username] = users[i]
	}
	for i, sp := range sps {
		admin(http.MethodPut, "/services/sp"+string(rune('1'+i)), SPMetadata(tb, sp))
	}
	rec := httptest.NewRecorder()
	srv.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p.MetadataURL, nil))
	p.Metadata = rec.Body.Bytes()
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	tb.Cleanup(func() { _ = hs.Close() })
	return p
}

// SPMetadata is the metadata of a service provider with no keys that takes
// responses with the HTTP-POST binding at sp.ACS.
func SPMetadata(tb testing.TB, sp SP) []byte {
	tb.Helper()
	acs, err := url.Parse(sp.ACS)
	if err != nil {
		tb.Fatal(err)
	}
	s := saml.ServiceProvider{EntityID: sp.EntityID, AcsURL: *acs, AssertionConsumerServiceBindings: []string{saml.HTTPPostBinding}}
	b, err := xml.Marshal(s.Metadata())
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Response is what the provider would post to the ACS.
type Response struct {
	ACS, SAMLResponse, RelayState string
}

// Alter changes a response being made: before the assertion is signed
// (Assertion set), or, with Unsign, after.
type Alter struct {
	// Now is the provider's clock for this response (zero: now).
	Now time.Time
	// RequestID replaces the id of the request answered.
	RequestID string
	// Audience replaces the assertion's audience.
	Audience string
	// Unsign strips every signature.
	Unsign bool
}

// Respond answers the AuthnRequest of authnURL (the HTTP-Redirect URL a
// service provider sent the browser to) for user, as the provider's login
// would, with alter applied.
func (p *Provider) Respond(tb testing.TB, authnURL string, user string, alter Alter) Response {
	tb.Helper()
	u, ok := p.users[user]
	if !ok {
		tb.Fatalf("samlidp: no user %s", user)
	}
	hr := httptest.NewRequest(http.MethodGet, authnURL, nil)
	req, err := saml.NewIdpAuthnRequest(&p.srv.IDP, hr)
	if err != nil {
		tb.Fatal(err)
	}
	if err := req.Validate(); err != nil {
		tb.Fatal(err)
	}
	if !alter.Now.IsZero() {
		req.Now = alter.Now
	}
	if alter.RequestID != "" {
		req.Request.ID = alter.RequestID
	}
	sess := &saml.Session{ID: "s1", NameID: u.Email, NameIDFormat: string(saml.EmailAddressNameIDFormat), CreateTime: req.Now,
		ExpireTime: req.Now.Add(time.Hour), Index: "1", UserName: u.Username, UserEmail: u.Email, Groups: u.Groups}
	if err := (saml.DefaultAssertionMaker{}).MakeAssertion(req, sess); err != nil {
		tb.Fatal(err)
	}
	if alter.Audience != "" {
		for i := range req.Assertion.Conditions.AudienceRestrictions {
			req.Assertion.Conditions.AudienceRestrictions[i].Audience = saml.Audience{Value: alter.Audience}
		}
	}
	if err := req.MakeResponse(); err != nil {
		tb.Fatal(err)
	}
	if alter.Unsign {
		strip(req.ResponseEl)
	}
	doc := etree.NewDocument()
	doc.SetRoot(req.ResponseEl)
	b, err := doc.WriteToBytes()
	if err != nil {
		tb.Fatal(err)
	}
	return Response{ACS: req.ACSEndpoint.Location, SAMLResponse: base64.StdEncoding.EncodeToString(b), RelayState: req.RelayState}
}

// strip removes every ds:Signature under el.
func strip(el *etree.Element) {
	for _, c := range el.ChildElements() {
		if c.Tag == "Signature" {
			el.RemoveChild(c)
			continue
		}
		strip(c)
	}
}

// Post sends r to its ACS with client c, as the provider's auto-submitting
// form does.
func Post(c *http.Client, r Response) (*http.Response, string, error) {
	resp, err := c.PostForm(r.ACS, url.Values{"SAMLResponse": {r.SAMLResponse}, "RelayState": {r.RelayState}})
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), nil
}
