package sso

import (
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/broker/identity"
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
		strings.Replace(good, "type: oidc", "type: saml", 1):                              `spec.type "saml": want oidc`,
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
