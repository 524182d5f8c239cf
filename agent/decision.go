package agent

import (
	"context"
	"fmt"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/events"
)

// Denial is the message a user denied a session sees: who may not connect
// to which database as which db_user on which db_name, and why. The
// engines send it in their protocol's error form and record it in the
// session's start event, so it is built once here to read the same
// everywhere.
func Denial(tgUser, db, dbUser, dbName string, d Decision) string {
	return fmt.Sprintf("access denied: user %q may not connect to %q as db_user %q on db_name %q: %s", tgUser, db, dbUser, dbName, d.Refusal(dbUser, dbName))
}

// RefusedIdentity is Decision.Refused when the certificate's identity no
// longer holds: its user was removed. Reason says so.
const RefusedIdentity = "identity"

// RefusedSessionMFA is Decision.Refused when a role needs a second factor
// for each session (require_session_mfa) and the certificate was not
// issued after one for this database and database user. Reason says
// which it was.
const RefusedSessionMFA = "session_mfa_required"

// sessionMFA refuses what d allowed when the session needs a per-session
// certificate and the client's is not one for db and dbUser. A per-session
// certificate serves its one database and user only, whatever the roles.
func sessionMFA(id identity.Identity, db, dbUser string, d Decision) Decision {
	m := id.MFASession
	if !d.Allowed || (!d.Options.RequireSessionMFA && m == nil) {
		return d
	}
	switch {
	case m == nil:
		d.Reason = "a role of the user needs a second factor for each database session (require_session_mfa) and this is the login certificate; tg db connect, login and proxy ask for the factor"
	case m.Database != db:
		d.Reason = fmt.Sprintf("the certificate was issued after a second factor for database %q, not this one", m.Database)
	case m.DBUser != dbUser:
		d.Reason = fmt.Sprintf("the certificate was issued after a second factor for db_user %q, not %q", m.DBUser, dbUser)
	default:
		return d
	}
	d.Allowed, d.Refused, d.Rule = false, RefusedSessionMFA, "require_session_mfa"
	return d
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
	case RefusedIdentity:
		return d.Reason
	case RefusedSessionMFA:
		return RefusedSessionMFA + ": " + d.Reason
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

// DeniedError is StartSession's error when the access decision refused the
// session; Message is the denial the engine reports in its protocol's form.
type DeniedError struct {
	Decision Decision
	Message  string
}

func (e *DeniedError) Error() string { return e.Message }

// StartSession decides whether c may open a session as dbUser on dbName,
// opens the audit session and gates its start event, which records the
// decision either way. deny words a refusal (Denial, or an engine's own
// wording). On success the session is open and the engine proxies. Else
// the session is closed and the error is either a *DeniedError or the
// gate's error (the store cannot take the start event); the engine tells
// the client in its protocol's form.
func (c *ClientConn) StartSession(ctx context.Context, dbUser, dbName string, deny func(tgUser, db, dbUser, dbName string, d Decision) string) (*Session, error) {
	return c.Start(ctx, SessionRequest{DBUser: dbUser, DBName: dbName, Deny: deny})
}

// SessionRequest is what an engine read from a client's startup.
type SessionRequest struct {
	DBUser, DBName string
	// Deny words an access refusal (see StartSession).
	Deny func(tgUser, db, dbUser, dbName string, d Decision) string
	// StartupParameters are the client's own settings, as name=value,
	// recorded in the start event.
	StartupParameters []string
	// Refuse, when set, refuses a session access allows, for this reason
	// (a startup parameter the agent does not let through): the start
	// event records it and the error is a *RefusedError.
	Refuse string
}

// RefusedError is Start's error when access allowed the session but the
// engine refused what the client asked for at startup.
type RefusedError struct{ Message string }

func (e *RefusedError) Error() string { return e.Message }

// Start is StartSession with the startup's parameters and the engine's
// own refusal.
func (c *ClientConn) Start(ctx context.Context, r SessionRequest) (*Session, error) {
	info := c.Database.Info()
	dec := sessionMFA(c.Identity, info.Name, r.DBUser, c.Env.Authorize(c.Identity, info, r.DBUser, r.DBName))
	sess := c.Env.NewSession(c.Identity, c.Database, r.DBUser, r.DBName)
	mode := "strict"
	if !sess.Strict() {
		mode = "async"
	}
	start := &events.SessionStart{
		ClientAddr: c.RemoteAddr().String(), Rule: dec.Rule, AuditMode: mode,
		Status:            events.Status{Success: dec.Allowed && r.Refuse == ""},
		StartupParameters: r.StartupParameters,
	}
	switch {
	case !dec.Allowed:
		start.Error = r.Deny(c.Identity.User, info.Name, r.DBUser, r.DBName, dec)
	case r.Refuse != "":
		start.Error = r.Refuse
	}
	if err := sess.Gate(ctx, start); err != nil {
		sess.Close(nil)
		return nil, err
	}
	switch {
	case !dec.Allowed:
		sess.Close(nil)
		return nil, &DeniedError{Decision: dec, Message: start.Error}
	case r.Refuse != "":
		sess.Close(nil)
		return nil, &RefusedError{Message: r.Refuse}
	}
	sess.Options = dec.Options
	return sess, nil
}
