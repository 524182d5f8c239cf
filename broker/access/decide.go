package access

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/protocol"
)

// What a refused decision refused (Decision.Refused).
const (
	RefusedLabels = "labels"
	RefusedDBUser = "db_user"
	RefusedDBName = "db_name"
)

// Database is what the decision needs to know about a database.
type Database struct {
	Name   string
	Labels map[string]string
	// IgnoreDBName leaves db_names out of the decision, for protocols where
	// the database name given at connect time proves nothing because the
	// session can switch databases at will and the engine does not check
	// each switch (SQL Server USE); see IgnoresDBName. The MySQL engine
	// checks every USE and COM_INIT_DB itself, so MySQL names are enforced. Otherwise the name is always checked, and an empty
	// name only matches '*': an engine must pass the effective name (for
	// PostgreSQL, the user name when the client gave none).
	IgnoreDBName bool
}

// IgnoresDBName reports whether the decision should leave db_names out for
// a protocol (Database.IgnoreDBName).
func IgnoresDBName(name string) bool {
	return protocol.Get(name).DBName == protocol.DBNameUnchecked
}

// Decision is the outcome of Decide.
type Decision struct {
	Allowed bool
	// Rule names the rule that decided, e.g. "role dev: deny db_users" or
	// "role access: allow"; for a refusal without a deny rule it says that
	// no allow rule matched.
	Rule string
	// Refused is RefusedLabels, RefusedDBUser or RefusedDBName, or "" when
	// allowed.
	Refused string
	// Reason says in words what was refused or allowed, naming the
	// database, the db_user or db_name and the roles.
	Reason string
}

// Decide says whether id, holding roles, may open a session to db as
// dbUser on dbName. It is a pure function: the same inputs always give the
// same decision.
//
// A deny rule applies to a database when its db_labels match the database
// or are empty; it then refuses a matching db_user, a matching db_name, or,
// when it lists labels but neither db_users nor db_names, the whole
// database. Any applying deny wins over every allow. Access is allowed
// when one role's allow matches all three of labels, db_user and db_name;
// an allow without db_labels (or without db_users, or db_names) allows
// nothing.
func Decide(id identity.Identity, roles []Role, db Database, dbUser, dbName string) Decision {
	if len(roles) == 0 {
		return Decision{Refused: RefusedLabels, Rule: "no roles",
			Reason: fmt.Sprintf("user %q holds no roles, so no database is allowed", id.User)}
	}
	traits := id.Traits
	for i := range roles {
		r := &roles[i]
		d := &r.Spec.Deny
		if d.empty() {
			continue
		}
		if len(d.DBLabels) > 0 && !labelsMatch(d.DBLabels, db.Labels, traits, true) {
			continue
		}
		if len(d.DBUsers) == 0 && len(d.DBNames) == 0 {
			return Decision{Refused: RefusedLabels, Rule: "role " + r.Name() + ": deny db_labels",
				Reason: fmt.Sprintf("database %q (%s) is denied by role %q", db.Name, labelText(db.Labels), r.Name())}
		}
		if anyMatch(d.DBUsers, dbUser, traits, true) {
			return Decision{Refused: RefusedDBUser, Rule: "role " + r.Name() + ": deny db_users",
				Reason: fmt.Sprintf("db_user %q on database %q is denied by role %q", dbUser, db.Name, r.Name())}
		}
		if !db.IgnoreDBName && anyMatch(d.DBNames, dbName, traits, true) {
			return Decision{Refused: RefusedDBName, Rule: "role " + r.Name() + ": deny db_names",
				Reason: fmt.Sprintf("db_name %q on database %q is denied by role %q", dbName, db.Name, r.Name())}
		}
	}

	labelsOK, userOK := false, false
	for i := range roles {
		r := &roles[i]
		a := &r.Spec.Allow
		if len(a.DBLabels) == 0 || !labelsMatch(a.DBLabels, db.Labels, traits, false) {
			continue
		}
		labelsOK = true
		if !anyMatch(a.DBUsers, dbUser, traits, false) {
			continue
		}
		userOK = true
		if !db.IgnoreDBName && !anyMatch(a.DBNames, dbName, traits, false) {
			continue
		}
		return Decision{Allowed: true, Rule: "role " + r.Name() + ": allow",
			Reason: fmt.Sprintf("role %q allows db_user %q on database %q", r.Name(), dbUser, db.Name)}
	}
	names := roleNames(roles)
	switch {
	case !labelsOK:
		return Decision{Refused: RefusedLabels, Rule: "no allow rule matches db_labels",
			Reason: fmt.Sprintf("database %q (%s) is not allowed by roles %s", db.Name, labelText(db.Labels), names)}
	case !userOK:
		return Decision{Refused: RefusedDBUser, Rule: "no allow rule matches db_users",
			Reason: fmt.Sprintf("db_user %q on database %q is not allowed by roles %s", dbUser, db.Name, names)}
	}
	return Decision{Refused: RefusedDBName, Rule: "no allow rule matches db_names",
		Reason: fmt.Sprintf("db_name %q for db_user %q on database %q is not allowed by roles %s", dbName, dbUser, db.Name, names)}
}

// CanSee reports whether a database belongs in the user's database list:
// some role's allow labels match it and no deny rule refuses it outright
// (by labels alone). It says nothing about which db_user may be used.
func CanSee(id identity.Identity, roles []Role, db Database) bool {
	for i := range roles {
		d := &roles[i].Spec.Deny
		if len(d.DBLabels) > 0 && len(d.DBUsers) == 0 && len(d.DBNames) == 0 &&
			labelsMatch(d.DBLabels, db.Labels, id.Traits, true) {
			return false
		}
	}
	for i := range roles {
		a := &roles[i].Spec.Allow
		if len(a.DBLabels) > 0 && labelsMatch(a.DBLabels, db.Labels, id.Traits, false) {
			return true
		}
	}
	return false
}

// labelsMatch reports whether every key of want is on the database with a
// matching value. deny says which way an unusable pattern falls: matching
// on the deny side, not matching on the allow side.
func labelsMatch(want Labels, have map[string]string, traits map[string][]string, deny bool) bool {
	for k, vs := range want {
		if k == Wildcard {
			continue // '*': '*' selects every database; Validate forbids other values
		}
		v, ok := have[k]
		if !ok {
			return false
		}
		if !anyMatch(vs, v, traits, deny) {
			return false
		}
	}
	return true
}

// anyMatch reports whether s matches one of the patterns after template
// expansion.
func anyMatch(patterns []string, s string, traits map[string][]string, deny bool) bool {
	expanded, broken := expand(patterns, traits)
	if broken && deny {
		return true
	}
	for _, p := range expanded {
		m, ok := matchValue(p, s)
		if !ok && deny {
			return true
		}
		if m {
			return true
		}
	}
	return false
}

func labelText(l map[string]string) string {
	if len(l) == 0 {
		return "no labels"
	}
	kv := make([]string, 0, len(l))
	for k, v := range l {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return "labels " + strings.Join(kv, ",")
}

func roleNames(roles []Role) string {
	n := make([]string, len(roles))
	for i := range roles {
		n[i] = roles[i].Name()
	}
	return "[" + strings.Join(n, ", ") + "]"
}
