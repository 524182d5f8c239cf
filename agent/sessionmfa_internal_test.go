package agent

import (
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
)

// A role with require_session_mfa admits only a certificate issued for
// the session's database and database user; such a certificate serves
// nothing else, even where no role asks for it.
func TestSessionMFADecision(t *testing.T) {
	allowed := Decision{Allowed: true, Rule: "role r: allow", Options: access.RoleOptions{RequireSessionMFA: true}}
	plain := allowed
	plain.Options.RequireSessionMFA = false
	marked := func(db, user string) identity.Identity {
		return identity.Identity{User: "u", MFASession: &identity.MFASession{Database: db, DBUser: user, Method: "totp"}}
	}
	for _, c := range []struct {
		name string
		id   identity.Identity
		d    Decision
		want string // "" allowed, else in the reason
	}{
		{"login certificate", identity.Identity{User: "u"}, allowed, "login certificate"},
		{"its session", marked("pg", "app"), allowed, ""},
		{"another database", marked("other", "app"), allowed, `database "other"`},
		{"another db user", marked("pg", "admin"), allowed, `db_user "admin", not "app"`},
		{"no role asks, another database", marked("other", "app"), plain, `database "other"`},
		{"no role asks, login certificate", identity.Identity{User: "u"}, plain, ""},
		{"denied stays denied", identity.Identity{User: "u"}, Decision{Refused: "db_user"}, "-"},
	} {
		got := sessionMFA(c.id, "pg", "app", c.d)
		switch {
		case c.want == "" && !got.Allowed:
			t.Errorf("%s: refused: %s", c.name, got.Reason)
		case c.want == "-" && (got.Allowed || got.Refused != "db_user"):
			t.Errorf("%s: %+v", c.name, got)
		case c.want != "" && c.want != "-" && (got.Allowed || got.Refused != RefusedSessionMFA || !strings.Contains(got.Reason, c.want) ||
			!strings.HasPrefix(got.Refusal("app", "db"), "session_mfa_required: ")):
			t.Errorf("%s: %+v, want a session_mfa_required refusal naming %q", c.name, got, c.want)
		}
	}
}
