package access

import (
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/identity"
)

func mustParse(t testing.TB, y string) []Role {
	t.Helper()
	r, err := Parse([]byte(y))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, y)
	}
	return r
}

func role(t testing.TB, name, spec string) Role {
	t.Helper()
	y := "kind: role\nmetadata:\n  name: " + name + "\nspec:\n" + indent(spec, "  ")
	return mustParse(t, y)[0]
}

func indent(s, pre string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i := range lines {
		lines[i] = pre + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

func TestDecide(t *testing.T) {
	access, _ := BuiltinRole(RoleAccess)
	dev := role(t, "dev", `
allow:
  db_labels: {env: [dev, staging]}
  db_users: [app, readonly]
  db_names: [app]
`)
	prodGlob := role(t, "prodglob", `
allow:
  db_labels: {env: "prod-*"}
  db_users: ["*"]
  db_names: ["*"]
`)
	regex := role(t, "regex", `
allow:
  db_labels: {region: "^eu-(west|north)-[0-9]$"}
  db_users: ["^report_[a-z]+$"]
  db_names: ["analytics*"]
`)
	all := role(t, "all", `
allow:
  db_labels: {"*": "*"}
  db_users: ["*"]
  db_names: ["*"]
`)
	denyProd := role(t, "noprod", `
deny:
  db_labels: {env: prod}
`)
	denyRoot := role(t, "noroot", `
deny:
  db_users: [root, postgres]
`)
	denyName := role(t, "nosecret", `
deny:
  db_labels: {"*": "*"}
  db_names: ["secret*"]
`)
	denyUserOnEU := role(t, "eusafe", `
deny:
  db_labels: {region: "eu-*"}
  db_users: ["admin"]
`)
	emptyAllow := role(t, "empty", `
allow: {}
`)
	labelsOnly := role(t, "labelsonly", `
allow:
  db_labels: {"*": "*"}
`)
	ext := role(t, "ext", `
allow:
  db_labels: {team: "{{external.team}}"}
  db_users: ["{{external.db_login}}", "svc-{{external.team}}"]
  db_names: ["*"]
`)
	denyExt := role(t, "denyext", `
deny:
  db_users: ["{{external.banned}}"]
`)

	alice := identity.Identity{User: "alice", Traits: map[string][]string{
		identity.TraitDBUsers: {"alice", "^ro_.*$"},
		identity.TraitDBNames: {"app", "shop-*"},
		"team":                {"payments"},
		"db_login":            {"pay"},
	}}
	bare := identity.Identity{User: "bob"}

	dbDev := Database{Name: "pg-dev", Labels: map[string]string{"env": "dev"}}
	dbProd := Database{Name: "pg-prod", Labels: map[string]string{"env": "prod"}}
	dbProdEU := Database{Name: "pg-prod-eu", Labels: map[string]string{"env": "prod-eu", "region": "eu-west-1"}}
	dbEUNorth := Database{Name: "an", Labels: map[string]string{"region": "eu-north-2"}}
	dbUS := Database{Name: "an-us", Labels: map[string]string{"region": "us-east-1"}}
	dbPay := Database{Name: "pay", Labels: map[string]string{"team": "payments"}}
	dbNoLabels := Database{Name: "bare"}
	dbSQLServer := Database{Name: "ms", Labels: map[string]string{"env": "dev"}, IgnoreDBName: IgnoresDBName("sqlserver")}
	dbMySQL := Database{Name: "my", Labels: map[string]string{"env": "dev"}, IgnoreDBName: IgnoresDBName("mysql")}

	cases := []struct {
		name           string
		id             identity.Identity
		roles          []Role
		db             Database
		user, dbname   string
		allowed        bool
		refused, rule  string
		reasonContains string
	}{
		{"label match", alice, []Role{dev}, dbDev, "app", "app", true, "", "role dev: allow", `role "dev" allows db_user "app"`},
		{"label list second value", alice, []Role{dev}, Database{Name: "s", Labels: map[string]string{"env": "staging"}}, "app", "app", true, "", "role dev: allow", ""},
		{"label mismatch", alice, []Role{dev}, dbProd, "app", "app", false, RefusedLabels, "no allow rule matches db_labels", `database "pg-prod" (labels env=prod) is not allowed by roles [dev]`},
		{"label key missing", alice, []Role{dev}, dbNoLabels, "app", "app", false, RefusedLabels, "", "no labels"},
		{"db_user not listed", alice, []Role{dev}, dbDev, "root", "app", false, RefusedDBUser, "no allow rule matches db_users", `db_user "root"`},
		{"db_name not listed", alice, []Role{dev}, dbDev, "app", "other", false, RefusedDBName, "no allow rule matches db_names", `db_name "other"`},
		{"db_name ignored for sqlserver", alice, []Role{dev}, dbSQLServer, "app", "other", true, "", "role dev: allow", ""},
		{"db_name enforced for mysql", alice, []Role{dev}, dbMySQL, "app", "other", false, RefusedDBName, "no allow rule matches db_names", `db_name "other"`},
		{"empty db_name only matches wildcard", alice, []Role{dev}, dbDev, "app", "", false, RefusedDBName, "", ""},
		{"glob label", alice, []Role{prodGlob}, dbProdEU, "x", "y", true, "", "role prodglob: allow", ""},
		{"glob label no match", alice, []Role{prodGlob}, dbProd, "x", "y", false, RefusedLabels, "", ""},
		{"regex label and user", alice, []Role{regex}, dbEUNorth, "report_sales", "analytics_eu", true, "", "role regex: allow", ""},
		{"regex label mismatch", alice, []Role{regex}, dbUS, "report_sales", "analytics", false, RefusedLabels, "", ""},
		{"regex user anchored", alice, []Role{regex}, dbEUNorth, "report_sales2", "analytics", false, RefusedDBUser, "", ""},
		{"glob name", alice, []Role{regex}, dbEUNorth, "report_x", "warehouse", false, RefusedDBName, "", ""},
		{"wildcard label key", alice, []Role{all}, dbNoLabels, "anyone", "anything", true, "", "role all: allow", ""},
		{"deny by label", alice, []Role{all, denyProd}, dbProd, "app", "app", false, RefusedLabels, "role noprod: deny db_labels", `database "pg-prod" (labels env=prod) is denied by role "noprod"`},
		{"deny by label elsewhere allowed", alice, []Role{all, denyProd}, dbDev, "app", "app", true, "", "role all: allow", ""},
		{"deny by user everywhere", alice, []Role{all, denyRoot}, dbNoLabels, "postgres", "app", false, RefusedDBUser, "role noroot: deny db_users", `db_user "postgres" on database "bare" is denied by role "noroot"`},
		{"deny by user other user allowed", alice, []Role{all, denyRoot}, dbNoLabels, "app", "app", true, "", "role all: allow", ""},
		{"deny by name glob", alice, []Role{all, denyName}, dbDev, "app", "secret_hr", false, RefusedDBName, "role nosecret: deny db_names", `db_name "secret_hr"`},
		{"deny by name ignored for sqlserver", alice, []Role{all, denyName}, dbSQLServer, "app", "secret_hr", true, "", "", ""},
		{"deny by name for mysql", alice, []Role{all, denyName}, dbMySQL, "app", "secret_hr", false, RefusedDBName, "role nosecret: deny db_names", `db_name "secret_hr"`},
		{"deny user scoped by labels hits", alice, []Role{all, denyUserOnEU}, dbProdEU, "admin", "x", false, RefusedDBUser, "role eusafe: deny db_users", ""},
		{"deny user scoped by labels misses", alice, []Role{all, denyUserOnEU}, dbUS, "admin", "x", true, "", "role all: allow", ""},
		{"deny wins regardless of order", alice, []Role{denyRoot, all}, dbDev, "root", "x", false, RefusedDBUser, "role noroot: deny db_users", ""},
		{"empty allow is deny", alice, []Role{emptyAllow}, dbDev, "app", "app", false, RefusedLabels, "", ""},
		{"labels without users is deny", alice, []Role{labelsOnly}, dbDev, "app", "app", false, RefusedDBUser, "", ""},
		{"no roles", alice, nil, dbDev, "app", "app", false, RefusedLabels, "no roles", `holds no roles`},
		{"internal templates", alice, []Role{access}, dbProd, "alice", "app", true, "", "role access: allow", ""},
		{"internal template regex trait", alice, []Role{access}, dbProd, "ro_bi", "shop-eu", true, "", "role access: allow", ""},
		{"internal template user refused", alice, []Role{access}, dbProd, "root", "app", false, RefusedDBUser, "", ""},
		{"internal template name refused", alice, []Role{access}, dbProd, "alice", "hr", false, RefusedDBName, "", ""},
		{"missing traits grant nothing", bare, []Role{access}, dbProd, "bob", "app", false, RefusedDBUser, "", ""},
		{"missing traits empty user", bare, []Role{access}, dbProd, "", "", false, RefusedDBUser, "", ""},
		{"external templates in labels and users", alice, []Role{ext}, dbPay, "pay", "x", true, "", "role ext: allow", ""},
		{"external template with prefix", alice, []Role{ext}, dbPay, "svc-payments", "x", true, "", "role ext: allow", ""},
		{"external label trait missing", bare, []Role{ext}, dbPay, "pay", "x", false, RefusedLabels, "", ""},
		{"external label other team", alice, []Role{ext}, Database{Name: "o", Labels: map[string]string{"team": "ops"}}, "pay", "x", false, RefusedLabels, "", ""},
		{"deny template missing trait denies nothing", bare, []Role{all, denyExt}, dbDev, "x", "y", true, "", "role all: allow", ""},
		{"deny template with trait", identity.Identity{Traits: map[string][]string{"banned": {"x"}}}, []Role{all, denyExt}, dbDev, "x", "y", false, RefusedDBUser, "role denyext: deny db_users", ""},
		{"multiple roles merge: labels from one user from another is deny", alice, []Role{dev, regex}, dbDev, "report_a", "app", false, RefusedDBUser, "", "[dev, regex]"},
		{"multiple roles: second role allows", alice, []Role{dev, prodGlob}, dbProdEU, "anyone", "any", true, "", "role prodglob: allow", ""},
		{"multiple roles: first allowing role named", alice, []Role{all, dev}, dbDev, "app", "app", true, "", "role all: allow", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.id, tc.roles, tc.db, tc.user, tc.dbname)
			if d.Allowed != tc.allowed || d.Refused != tc.refused {
				t.Fatalf("got %+v, want allowed=%v refused=%q", d, tc.allowed, tc.refused)
			}
			if tc.rule != "" && d.Rule != tc.rule {
				t.Errorf("rule %q, want %q", d.Rule, tc.rule)
			}
			if d.Rule == "" || d.Reason == "" {
				t.Errorf("decision without rule or reason: %+v", d)
			}
			if tc.reasonContains != "" && !strings.Contains(d.Reason, tc.reasonContains) {
				t.Errorf("reason %q lacks %q", d.Reason, tc.reasonContains)
			}
		})
	}
}

// A pattern that cannot be used (a role stored without validation) must
// never widen access: on the deny side it denies, on the allow side it
// grants nothing.
func TestBrokenPatternsFailClosed(t *testing.T) {
	all := Role{Kind: KindRole, Metadata: Metadata{Name: "all"}, Spec: RoleSpec{Allow: Conditions{
		DBLabels: Labels{"*": {"*"}}, DBUsers: []string{"*"}, DBNames: []string{"*"}}}}
	badDeny := Role{Kind: KindRole, Metadata: Metadata{Name: "bad"}, Spec: RoleSpec{Deny: Conditions{
		DBUsers: []string{"^(unclosed$"}}}}
	badTemplate := Role{Kind: KindRole, Metadata: Metadata{Name: "badt"}, Spec: RoleSpec{Deny: Conditions{
		DBUsers: []string{"{{internal.nope}}"}}}}
	badAllow := Role{Kind: KindRole, Metadata: Metadata{Name: "bada"}, Spec: RoleSpec{Allow: Conditions{
		DBLabels: Labels{"*": {"*"}}, DBUsers: []string{"^(x$"}, DBNames: []string{"*"}}}}
	db := Database{Name: "d"}
	if d := Decide(identity.Identity{}, []Role{all, badDeny}, db, "u", "n"); d.Allowed {
		t.Errorf("broken deny regex allowed: %+v", d)
	}
	if d := Decide(identity.Identity{}, []Role{all, badTemplate}, db, "u", "n"); d.Allowed {
		t.Errorf("broken deny template allowed: %+v", d)
	}
	if d := Decide(identity.Identity{}, []Role{badAllow}, db, "(x", "n"); d.Allowed {
		t.Errorf("broken allow regex allowed: %+v", d)
	}
	for _, r := range []Role{badDeny, badTemplate, badAllow} {
		if err := r.Validate(); err == nil {
			t.Errorf("role %s validated", r.Name())
		}
	}
}

func TestCanSee(t *testing.T) {
	dev := role(t, "dev", "allow:\n  db_labels: {env: dev}\n  db_users: [a]\n")
	noprod := role(t, "noprod", "deny:\n  db_labels: {env: dev}\n")
	id := identity.Identity{User: "a"}
	db := Database{Name: "x", Labels: map[string]string{"env": "dev"}}
	if !CanSee(id, []Role{dev}, db) {
		t.Error("dev database hidden")
	}
	if CanSee(id, []Role{dev}, Database{Name: "y", Labels: map[string]string{"env": "prod"}}) {
		t.Error("prod database shown")
	}
	if CanSee(id, []Role{dev, noprod}, db) {
		t.Error("denied database shown")
	}
}

func TestOptionsMostRestrictiveWins(t *testing.T) {
	a := role(t, "a", "options:\n  max_session_ttl: 8h\n  client_idle_timeout: 1h\n  audit_mode: async\n")
	b := role(t, "b", "options:\n  max_session_ttl: 30m\n  disconnect_expired_cert: true\n")
	c := role(t, "c", "options:\n  client_idle_timeout: 10m\n  audit_mode: strict\n  disconnect_expired_cert: false\n")
	none := role(t, "none", "allow: {}\n")
	infileOn := role(t, "on", "options:\n  mysql_local_infile: true\n")
	infileOff := role(t, "off", "options:\n  mysql_local_infile: false\n")
	monitorOn := role(t, "mon", "options:\n  redis_monitor: true\n")
	monitorOff := role(t, "nomon", "options:\n  redis_monitor: false\n")

	cases := []struct {
		roles []Role
		want  RoleOptions
	}{
		{nil, RoleOptions{}},
		{[]Role{none}, RoleOptions{}},
		{[]Role{a}, RoleOptions{MaxSessionTTL: 8 * time.Hour, ClientIdleTimeout: time.Hour, AuditMode: AuditAsync}},
		{[]Role{a, b}, RoleOptions{MaxSessionTTL: 30 * time.Minute, ClientIdleTimeout: time.Hour, DisconnectExpiredCert: true, AuditMode: AuditAsync}},
		{[]Role{c, a}, RoleOptions{MaxSessionTTL: 8 * time.Hour, ClientIdleTimeout: 10 * time.Minute, AuditMode: AuditStrict}},
		{[]Role{a, b, c, none}, RoleOptions{MaxSessionTTL: 30 * time.Minute, ClientIdleTimeout: 10 * time.Minute, DisconnectExpiredCert: true, AuditMode: AuditStrict}},
		{[]Role{infileOn, none}, RoleOptions{}},
		{[]Role{infileOn, infileOff}, RoleOptions{NoMySQLLocalInfile: true}},
		{[]Role{monitorOn, none}, RoleOptions{RedisMonitor: true}},
		{[]Role{monitorOn, monitorOff}, RoleOptions{}},
		{[]Role{monitorOff, monitorOn}, RoleOptions{}},
	}
	for i, tc := range cases {
		if got := Options(tc.roles); got != tc.want {
			t.Errorf("case %d: got %+v, want %+v", i, got, tc.want)
		}
	}
}

func TestRequestAndReview(t *testing.T) {
	req, _ := BuiltinRole(RoleRequester)
	rev, _ := BuiltinRole(RoleReviewer)
	limited := role(t, "limited", "allow:\n  request:\n    roles: ['db-*']\n    reason_required: true\ndeny:\n  request:\n    roles: [db-admin]\n  review_requests:\n    roles: [editor]\n")
	id := identity.Identity{User: "a"}
	if !CanRequest(id, []Role{req}, RoleAccess) || CanRequest(id, []Role{req}, RoleEditor) {
		t.Error("requester: access only")
	}
	if !CanRequest(id, []Role{limited}, "db-read") || CanRequest(id, []Role{limited}, "db-admin") {
		t.Error("glob request with deny")
	}
	if ReasonRequired([]Role{req}) || !ReasonRequired([]Role{req, limited}) {
		t.Error("reason_required")
	}
	if !CanReview(id, []Role{rev}, RoleEditor) || CanReview(id, []Role{rev, limited}, RoleEditor) {
		t.Error("review with deny")
	}
	if CanReview(id, []Role{req}, RoleAccess) {
		t.Error("requester reviews")
	}
}

func TestBuiltinsValidate(t *testing.T) {
	for _, r := range Builtin() {
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %v", r.Name(), err)
		}
		if !IsBuiltin(r.Name()) {
			t.Errorf("%s not built in", r.Name())
		}
	}
	// Built-ins are fresh copies: changing one must not change the next.
	b := Builtin()
	b[0].Spec.Allow.DBUsers[0] = "root"
	if a, _ := BuiltinRole(RoleAccess); a.Spec.Allow.DBUsers[0] != "{{internal.db_users}}" {
		t.Error("built-in role shared")
	}
}

func BenchmarkDecide(b *testing.B) {
	roles := []Role{
		role(b, "dev", "allow:\n  db_labels: {env: [dev, staging]}\n  db_users: [app, readonly]\n  db_names: [app]\n"),
		role(b, "noroot", "deny:\n  db_users: [root, postgres]\n"),
		role(b, "nosecret", "deny:\n  db_labels: {env: 'prod-*'}\n  db_names: ['^secret_.*$']\n"),
	}
	access, _ := BuiltinRole(RoleAccess)
	roles = append(roles, access)
	id := identity.Identity{User: "alice", Traits: map[string][]string{
		identity.TraitDBUsers: {"alice"}, identity.TraitDBNames: {"app", "shop"}}}
	db := Database{Name: "pg", Labels: map[string]string{"env": "prod-eu", "region": "eu"}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		d := Decide(id, roles, db, "alice", "shop")
		if !d.Allowed {
			b.Fatal(d)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}
