package security

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/crewjam/saml"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/sso"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/test/samlidp"
)

// samlWorld is the broker of ssoWorld with a SAML connector "ent" to a
// real identity provider (crewjam/saml's samlidp) on loopback, which knows
// the broker as a service provider and one other service provider.
type samlWorld struct {
	*ssoWorld
	idp *samlidp.Provider
}

const otherSP = "https://other.example.com/saml/metadata"

func newSAMLWorld(t *testing.T) *samlWorld {
	t.Helper()
	w := &samlWorld{ssoWorld: newSSOWorld(t)}
	w.idp = samlidp.Start(t, []samlidp.SP{
		{EntityID: w.base + sso.SAMLMetadataPath("ent"), ACS: w.base + sso.SAMLACSPath("ent")},
		{EntityID: otherSP, ACS: "https://other.example.com/saml/acs"},
	},
		samlidp.User{Username: "alice", Password: ssoIdPPassword, Email: "alice@example.com", Groups: []string{"dba"}},
		samlidp.User{Username: "eve", Password: ssoIdPPassword, Email: "eve@example.com", Groups: []string{"guests"}})
	admin := state.Actor{User: "admin", Roles: []string{access.RoleEditor}}
	if _, err := w.b.Admin.As(admin, "").UpsertConnectors(context.Background(), fmt.Sprintf(`kind: connector
metadata: {name: ent}
spec:
  type: saml
  entity_descriptor_url: %s
  attributes_to_roles: [{name: %s, value: dba, roles: [access]}]
`, w.idp.MetadataURL, samlidp.GroupsAttribute)); err != nil {
		t.Fatal(err)
	}
	return w
}

// begin starts a web sign-in with c; it returns the URL the broker sent
// the browser to at the provider (the AuthnRequest and RelayState).
func (w *samlWorld) begin(t *testing.T, c *http.Client) string {
	t.Helper()
	resp, err := c.Get(w.base + sso.SAMLLoginPath("ent"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	u := resp.Request.URL
	if resp.StatusCode != 200 || !strings.HasPrefix(u.String(), strings.TrimSuffix(w.idp.MetadataURL, "/metadata")+"/sso?") {
		t.Fatalf("the provider's login page: %d at %s", resp.StatusCode, u)
	}
	return u.String()
}

// post presents a response at the ACS as the provider's form does; it
// returns the status, the page, and whether a web session cookie was set.
func (w *samlWorld) post(t *testing.T, c *http.Client, r samlidp.Response) (int, string, bool) {
	t.Helper()
	if r.ACS != w.base+sso.SAMLACSPath("ent") {
		t.Fatalf("the provider posts to %s", r.ACS)
	}
	resp, err := c.PostForm(r.ACS, url.Values{"SAMLResponse": {r.SAMLResponse}, "RelayState": {r.RelayState}})
	if err != nil {
		t.Fatal(err)
	}
	return answer(resp)
}

// lastSAML is the newest saml user.login event.
func (w *samlWorld) lastSAML(t *testing.T) map[string]any { return w.lastLoginBy(t, events.LoginSAML) }

// refused checks that a response was refused, that no web session was
// made, and that the refusal is in AUDIT with reason and, in its error,
// detail.
func (w *samlWorld) refused(t *testing.T, what string, status int, page string, session bool, reason, detail string) {
	t.Helper()
	w.refusedBy(t, events.LoginSAML, "ent", what, status, page, session, reason, detail)
}

// signsIn checks that a genuine response still signs in, so that the
// refusals around it are the checks', not a broken flow.
func (w *samlWorld) signsIn(t *testing.T) {
	t.Helper()
	c := w.browser()
	st, page, ok := w.post(t, c, w.idp.Respond(t, w.begin(t, c), "alice", samlidp.Alter{}))
	if st != 200 || !ok {
		t.Fatalf("genuine response: status %d session %v\n%s", st, ok, page)
	}
	if ev := w.lastSAML(t); ev["success"] != true || ev["user"] != "alice@example.com" || fmt.Sprint(ev["roles"]) != "[access]" {
		t.Fatalf("genuine response: %v", ev)
	}
}

// TestSAMLResponse: responses made by the provider's own code but unsigned,
// expired, for another service provider, or answering a request this
// browser never made are refused, each with its reason.
func TestSAMLResponse(t *testing.T) {
	w := newSAMLWorld(t)
	w.signsIn(t)
	cases := []struct {
		name, reason, detail string
		alter                samlidp.Alter
	}{
		{"unsigned response", events.LoginSSOBadSignature, "signature", samlidp.Alter{Unsign: true}},
		{"expired assertion", events.LoginSSOExpired, "expired", samlidp.Alter{Now: time.Now().Add(-time.Hour)}},
		{"assertion for another service provider", events.LoginSSOWrongAudience, "AudienceRestriction", samlidp.Alter{Audience: otherSP}},
		{"response to a request never made", events.LoginSSOBadRequestID, "InResponseTo", samlidp.Alter{RequestID: "id-never-requested"}},
	}
	for _, tc := range cases {
		c := w.browser()
		st, page, ok := w.post(t, c, w.idp.Respond(t, w.begin(t, c), "alice", tc.alter))
		w.refused(t, tc.name, st, page, ok, tc.reason, tc.detail)
	}
	w.signsIn(t)
}

// TestSAMLReplay: a response already accepted is refused when posted
// again, by the same browser or another; a response lifted into another
// browser's attempt is refused; and one posted without an attempt (an
// unsolicited response) is refused.
func TestSAMLReplay(t *testing.T) {
	w := newSAMLWorld(t)
	c := w.browser()
	r := w.idp.Respond(t, w.begin(t, c), "alice", samlidp.Alter{})
	if st, page, ok := w.post(t, c, r); st != 200 || !ok {
		t.Fatalf("first post: %d %v\n%s", st, ok, page)
	}
	st, page, ok := w.post(t, c, r)
	w.refused(t, "replayed response", st, page, ok, events.LoginSSOBadState, "unknown, expired or reused RelayState")

	// The captured response brought into a fresh attempt of the same
	// browser: it answers the old request.
	fresh := w.begin(t, c)
	u, _ := url.Parse(fresh)
	r.RelayState = u.Query().Get("RelayState")
	st, page, ok = w.post(t, c, r)
	w.refused(t, "replayed response in a new attempt", st, page, ok, events.LoginSSOBadRequestID, "InResponseTo")

	// A fresh response posted from a browser that did not start the login.
	r = w.idp.Respond(t, w.begin(t, c), "alice", samlidp.Alter{})
	st, page, ok = w.post(t, w.browser(), r)
	w.refused(t, "response from another browser", st, page, ok, events.LoginSSOBadState, "without the browser binding")

	// Unsolicited: no RelayState of ours.
	r = w.idp.Respond(t, w.begin(t, c), "alice", samlidp.Alter{})
	r.RelayState = ""
	st, page, ok = w.post(t, c, r)
	w.refused(t, "unsolicited response", st, page, ok, events.LoginSSOBadState, "unknown, expired or reused RelayState")
	w.signsIn(t)
}

// TestSAMLNoRole: a user whose attributes map to no role is refused, told
// why, and the refusal names the user.
func TestSAMLNoRole(t *testing.T) {
	w := newSAMLWorld(t)
	c := w.browser()
	st, page, ok := w.post(t, c, w.idp.Respond(t, w.begin(t, c), "eve", samlidp.Alter{}))
	w.refused(t, "attributes mapping to no role", st, page, ok, events.LoginSSONoRole, "eve@example.com has no role")
	if !strings.Contains(page, "has no role") || !strings.Contains(page, samlidp.GroupsAttribute+"=guests") {
		t.Fatalf("the page does not say why:\n%s", page)
	}
	if ev := w.lastSAML(t); ev["user"] != "eve@example.com" {
		t.Fatalf("refusal without the user: %v", ev)
	}
}

// TestSAMLMetadata: the service provider's metadata names the entity id
// and ACS the checks use, both derived from the proxy's public address;
// a SAML connector cannot be started through the OIDC path.
func TestSAMLMetadata(t *testing.T) {
	w := newSAMLWorld(t)
	c := w.browser()
	resp, err := c.Get(w.base + sso.SAMLMetadataPath("ent"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var md saml.EntityDescriptor
	if err := xml.Unmarshal(b, &md); err != nil || resp.StatusCode != 200 {
		t.Fatalf("metadata: %d %v\n%s", resp.StatusCode, err, b)
	}
	if md.EntityID != w.base+sso.SAMLMetadataPath("ent") || len(md.SPSSODescriptors) != 1 ||
		len(md.SPSSODescriptors[0].AssertionConsumerServices) != 1 ||
		md.SPSSODescriptors[0].AssertionConsumerServices[0].Location != w.base+sso.SAMLACSPath("ent") ||
		md.SPSSODescriptors[0].AssertionConsumerServices[0].Binding != saml.HTTPPostBinding {
		t.Fatalf("metadata:\n%s", b)
	}
	resp, err = c.Get(w.base + sso.LoginPath("ent"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a SAML connector started as OIDC: %d at %s", resp.StatusCode, resp.Request.URL)
	}
}
