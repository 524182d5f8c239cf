package agent

import "fmt"

// Denial is the message a user denied a session sees: who may not connect
// to which database as which db_user on which db_name, and why. The
// engines send it in their protocol's error form and record it in the
// session's start event, so it is built once here to read the same
// everywhere.
func Denial(tgUser, db, dbUser, dbName string, d Decision) string {
	return fmt.Sprintf("access denied: user %q may not connect to %q as db_user %q on db_name %q: %s", tgUser, db, dbUser, dbName, d.Refusal(dbUser, dbName))
}

// Refusal says what a denying decision refused, followed by its reason
// and rule when it has them: the part of a denial message after the
// colon, for engines that word the first part their own way.
func (d Decision) Refusal(dbUser, dbName string) string {
	what := ""
	switch d.Refused {
	case "db_user":
		what = fmt.Sprintf("db_user %q is not allowed", dbUser)
	case "db_name":
		what = fmt.Sprintf("db_name %q is not allowed", dbName)
	case "labels":
		what = "the database's labels match none of the user's roles"
	case "":
		what = "no role allows it"
	default:
		what = d.Refused + " refused"
	}
	if d.Reason != "" {
		what += " (" + d.Reason + ")"
	}
	if d.Rule != "" {
		what += " [rule: " + d.Rule + "]"
	}
	return what
}
