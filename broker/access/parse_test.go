package access

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

const fullRole = `kind: role
metadata:
  name: dev
  description: Developers
spec:
  allow:
    db_labels:
      env: [dev, staging]
      region: "eu-*"
    db_users: ["{{internal.db_users}}", app]
    db_names: ["*"]
    request:
      roles: [dba]
      reason_required: true
    review_requests:
      roles: [access]
  deny:
    db_users: [root]
  options:
    max_session_ttl: 8h
    client_idle_timeout: 30m
    disconnect_expired_cert: true
    audit_mode: strict
---
kind: role
metadata: {name: ro}
spec:
  allow:
    db_labels: {"*": "*"}
    db_users: [readonly]
    db_names: ["*"]
`

func TestParseFull(t *testing.T) {
	roles := mustParse(t, fullRole)
	if len(roles) != 2 {
		t.Fatalf("%d roles", len(roles))
	}
	r := roles[0]
	tru := true
	want := Role{Kind: KindRole, Metadata: Metadata{Name: "dev", Description: "Developers"}, Spec: RoleSpec{
		Allow: Conditions{
			DBLabels:       Labels{"env": {"dev", "staging"}, "region": {"eu-*"}},
			DBUsers:        []string{"{{internal.db_users}}", "app"},
			DBNames:        []string{"*"},
			Request:        &RequestConditions{Roles: []string{"dba"}, ReasonRequired: true},
			ReviewRequests: &ReviewConditions{Roles: []string{"access"}},
		},
		Deny:    Conditions{DBUsers: []string{"root"}},
		Options: OptionSpec{MaxSessionTTL: "8h", ClientIdleTimeout: "30m", DisconnectExpiredCert: &tru, AuditMode: "strict"},
	}}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	// The stored form (JSON, in role.create events) round-trips.
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Role
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Fatalf("json round trip: %v\n%s", err, b)
	}
	if roles[1].Name() != "ro" || roles[1].Spec.Allow.DBLabels["*"][0] != "*" {
		t.Fatalf("second role %+v", roles[1])
	}
}

func TestParseErrorsNameKeyAndLine(t *testing.T) {
	head := "kind: role\nmetadata:\n  name: r\nspec:\n"
	cases := []struct{ yaml, want string }{
		{head + "  allow:\n    db_user: [a]\n", `line 6: unknown key "spec.allow.db_user"`},
		{head + "  alow:\n    db_users: [a]\n", `line 5: unknown key "spec.alow"`},
		{"kind: role\nmetadata:\n  name: r\n  labels: {a: b}\n", `line 4: unknown key "metadata.labels"`},
		{head + "  options:\n    max_session_ttl: forever\n", `line 6: role r: spec.options.max_session_ttl: "forever" is not a positive duration`},
		{head + "  options:\n    audit_mode: sometimes\n", `line 6: role r: spec.options.audit_mode: "sometimes"`},
		{head + "  options:\n    disconnect_expired_cert: maybe\n", `line 6: key "spec.options.disconnect_expired_cert" has the wrong type`},
		{head + "  allow:\n    db_users: root\n", `line 6: key "spec.allow.db_users" has the wrong type`},
		{head + "  allow:\n    db_labels: [env]\n", `line 6: key "spec.allow.db_labels" has the wrong type`},
		{head + "  allow:\n    db_labels:\n      env: {a: b}\n", `line 7: label values must be a string or a list`},
		{head + "  allow:\n    db_users:\n      - ok\n      - \"^(x$\"\n", `line 8: role r: spec.allow.db_users[1]: "^(x$" is not a valid regular expression`},
		{head + "  deny:\n    db_names: [\"{{internal.db_user}}\"]\n", `line 6: role r: spec.deny.db_names[0]: "{{internal.db_user}}": unknown internal trait "db_user"`},
		{head + "  allow:\n    db_users: [\"{{secret.x}}\"]\n", `unknown namespace "secret"`},
		{head + "  allow:\n    db_users: [\"{{external.x\"]\n", `unbalanced`},
		{head + "  allow:\n    db_labels: {\"*\": prod}\n", `the key '*' only takes the value '*'`},
		{"kind: rol\nmetadata:\n  name: r\n", `line 1: role r: kind: "rol": want "role"`},
		{"kind: role\nmetadata:\n  name: a.b\n", `line 3: metadata.name: role name "a.b"`},
		{"kind: role\nmetadata: {name: a}\n---\nkind: role\nmetadata: {name: a}\n", `role a is defined twice`},
		{"", `no role found`},
		{"kind: role\nmetadata: {name: a}\nspec: [\n", `roles: yaml:`},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got  %v\n want %q", tc.yaml, err, tc.want)
		}
	}
}
