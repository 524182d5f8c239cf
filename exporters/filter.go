package exporters

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/tollgate-db/tollgate/exporters/format"
)

// Filter narrows what an exporter delivers. Empty lists let everything
// through; an event must pass every non-empty list.
type Filter struct {
	// Types are event types; a '*' token matches one token and a final
	// '>' the rest, as in NATS subjects (db.session.*, db.>).
	Types []string
	// Users are user names (the envelope's user).
	Users []string
	// Databases are database names in Tollgate (db_service); events that
	// concern no database do not pass.
	Databases []string
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	typeRE = regexp.MustCompile(`^([a-z][a-z0-9_]*|\*)(\.([a-z][a-z0-9_]*|\*))*(\.>)?$|^>$`)
)

func (f Filter) validate() error {
	for _, t := range f.Types {
		if !typeRE.MatchString(t) {
			return fmt.Errorf("filter.types: %q is not an event type or pattern (e.g. db.session.query, db.session.*, db.>)", t)
		}
	}
	return nil
}

// matchType matches an event type against a pattern token by token.
func matchType(pattern, typ string) bool {
	for {
		p, prest, pmore := strings.Cut(pattern, ".")
		if p == ">" {
			return typ != ""
		}
		t, trest, tmore := strings.Cut(typ, ".")
		if p != "*" && p != t {
			return false
		}
		if !pmore || !tmore {
			return pmore == tmore
		}
		pattern, typ = prest, trest
	}
}

func (f Filter) pass(e *format.Envelope) bool {
	if len(f.Types) > 0 {
		ok := false
		for _, p := range f.Types {
			if matchType(p, e.Type) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.Users) > 0 && !contains(f.Users, e.User) {
		return false
	}
	if len(f.Databases) > 0 && (e.DBService == "" || !contains(f.Databases, e.DBService)) {
		return false
	}
	return true
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
