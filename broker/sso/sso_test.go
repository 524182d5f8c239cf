package sso

import (
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/test/samlidp"
)

const good = `kind: connector
version: v1
metadata: {name: corp}
spec:
  type: oidc
  issuer_url: https://idp.example.com
  client_id: tollgate
  client_secret: s3cret
  scopes: [email, openid, email, groups]
  claims_to_roles:
    - {claim: groups, value: "db-*", roles: [access], db_users: [app], db_names: [shop]}
    - {claim: email_verified, value: "true", roles: [requester, access], db_users: [app, ro]}
`

func TestParse(t *testing.T) {
	ps, err := Parse([]byte(good + "---\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Secret != "s3cret" || ps[0].Connector.Name != "corp" || strings.Join(ps[0].Connector.Scopes, ",") != "email,groups" {
		t.Fatalf("%+v", ps)
	}
	bad := map[string]string{
		strings.Replace(good, "client_id", "clientid", 1):                                 `clientid`,
		strings.Replace(good, "type: oidc", "type: ldap", 1):                              `spec.type "ldap": want oidc or saml`,
		strings.Replace(good, "type: oidc", "type: saml", 1):                              `issuer_url, client_id, client_secret, redirect_url, scopes, username_claim and claims_to_roles are for type oidc`,
		strings.Replace(good, "https://idp.example.com", "idp.example.com", 1):            `spec.issuer_url "idp.example.com"`,
		strings.Replace(good, "name: corp", "name: 'corp sso'", 1):                        `connector name "corp sso"`,
		strings.Replace(good, `value: "db-*"`, `value: "db-["`, 1):                        `claims_to_roles[0].value "db-["`,
		strings.Replace(good, "roles: [access], db_users: [app], db", "roles: [], db", 1): `claims_to_roles[0]: roles is empty`,
		strings.Replace(good, "kind: connector", "kind: role", 1):                         `kind is "role"`,
		good + "---\n" + good: `connector corp is defined twice`,
		"":                    `none found`,
		strings.Replace(good, "client_secret: s3cret", "redirect_url: http://x/cb", 1): `spec.redirect_url "http://x/cb"`,
	}
	for in, want := range bad {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want an error with %q, got %v\n%s", want, err, in)
		}
	}
}

func TestIdentity(t *testing.T) {
	ps, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	c := ps[0].Connector
	id, err := Identity(c, map[string]any{"email": "a@example.com", "groups": []any{"staff", "db-admins"}, "email_verified": true})
	if err != nil {
		t.Fatal(err)
	}
	if id.User != "a@example.com" || strings.Join(id.Roles, ",") != "access,requester" ||
		strings.Join(id.Traits[identity.TraitDBUsers], ",") != "app,ro" || strings.Join(id.Traits[identity.TraitDBNames], ",") != "shop" {
		t.Fatalf("%+v", id)
	}
	_, err = Identity(c, map[string]any{"email": "b@example.com", "groups": []any{"staff"}, "email_verified": false})
	if err == nil || !strings.Contains(err.Error(), "user b@example.com has no role") || !strings.Contains(err.Error(), "[email_verified=false groups=staff]") {
		t.Fatalf("no role: %v", err)
	}
	_, err = Identity(c, map[string]any{"groups": []any{"db-x"}})
	if me, ok := err.(*MappingError); !ok || !me.NoUser || !strings.Contains(err.Error(), `"email"`) {
		t.Fatalf("no user name: %v", err)
	}
	if _, err = Identity(c, map[string]any{"email": []any{"a@x", "b@x"}, "groups": []any{"db-x"}}); err == nil {
		t.Fatal("two user names accepted")
	}
}

// TestParseSAML reads SAML connectors: the metadata inline (checked to be
// an identity provider's with a signing certificate) or by URL.
func TestParseSAML(t *testing.T) {
	idp := samlidp.Start(t, nil)
	inline := "kind: connector\nmetadata: {name: corp}\nspec:\n  type: saml\n  entity_descriptor: |\n    " +
		strings.ReplaceAll(string(idp.Metadata), "\n", "\n    ") +
		"\n  attributes_to_roles:\n    - {name: groups, value: dba, roles: [access], db_users: [postgres]}\n"
	ps, err := Parse([]byte(inline))
	if err != nil {
		t.Fatal(err)
	}
	c := ps[0].Connector
	if c.Type != TypeSAML || !strings.Contains(c.EntityDescriptor, "IDPSSODescriptor") || len(c.ClaimsToRoles) != 1 || c.ClaimsToRoles[0].Claim != "groups" {
		t.Fatalf("%+v", c)
	}
	byURL := "kind: connector\nmetadata: {name: corp}\nspec:\n  type: saml\n  entity_descriptor_url: " + idp.MetadataURL +
		"\n  username_attribute: uid\n  attributes_to_roles: [{name: groups, value: dba, roles: [access]}]\n"
	if ps, err = Parse([]byte(byURL)); err != nil || ps[0].Connector.UsernameClaim != "uid" {
		t.Fatalf("%+v %v", ps, err)
	}
	bad := map[string]string{
		strings.Replace(byURL, "entity_descriptor_url: "+idp.MetadataURL, "entity_descriptor: <x/>", 1):                            `spec.entity_descriptor: not SAML identity provider metadata`,
		strings.Replace(byURL, "entity_descriptor_url: "+idp.MetadataURL, "entity_descriptor_url: idp/metadata", 1):                `spec.entity_descriptor_url "idp/metadata"`,
		strings.Replace(byURL, "  entity_descriptor_url: "+idp.MetadataURL+"\n", "", 1):                                            `spec.entity_descriptor_url (where the identity provider publishes its SAML metadata) or spec.entity_descriptor`,
		strings.Replace(byURL, "attributes_to_roles: [{name: groups, value: dba, roles: [access]}]", "attributes_to_roles: []", 1): `spec.attributes_to_roles is empty`,
		strings.Replace(byURL, "name: groups", "claim: groups", 1):                                                                 `claim`,
		strings.Replace(byURL, "attributes_to_roles: [{name", "claims_to_roles: [{claim", 1):                                       `are for type oidc`,
		strings.Replace(inline, "type: saml", "type: saml\n  entity_descriptor_url: "+idp.MetadataURL, 1):                          `both given`,
	}
	for in, want := range bad {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want an error with %q, got %v\n%s", want, err, in)
		}
	}
	// The user is the NameID unless username_attribute says otherwise.
	ps, _ = Parse([]byte(inline))
	id, err := Identity(ps[0].Connector, map[string]any{NameIDClaim: "a@example.com", "groups": []any{"staff", "dba"}})
	if err != nil || id.User != "a@example.com" || strings.Join(id.Roles, ",") != "access" {
		t.Fatalf("%+v %v", id, err)
	}
	if _, err := Identity(ps[0].Connector, map[string]any{NameIDClaim: "a@example.com", "groups": []any{"staff"}}); err == nil ||
		!strings.Contains(err.Error(), "[groups=staff]") {
		t.Fatalf("no role: %v", err)
	}
}
