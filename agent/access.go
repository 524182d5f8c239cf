package agent

import (
	"context"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/events"
)

// Recorder stores audit events. events.Publisher satisfies it: Publish and
// PublishBatch return only once the events are stored (strict publisher) or
// queued (async publisher); an error wraps events.ErrAuditUnavailable when
// the store cannot take them, and also events.ErrHeld when the recorder
// kept them to store later (they must not be recorded again).
type Recorder interface {
	Publish(ctx context.Context, ev events.Event) error
	PublishBatch(ctx context.Context, evs []events.Event) error
}

// DatabaseInfo is what the access decision knows about a database.
type DatabaseInfo struct {
	Name     string
	Protocol string
	URI      string
	Labels   map[string]string
}

// Decision is the outcome of an access check.
type Decision struct {
	Allowed bool
	// Rule names the role rule that decided, for the audit event.
	Rule string
	// Refused says what was refused when denied: db_user, db_name or
	// labels.
	Refused string
	// Reason is a sentence a user can act on.
	Reason string
	// Options are the merged session options of the identity's roles,
	// for what an engine lets through within an allowed session.
	Options access.RoleOptions
}

// Authorizer decides whether an identity may open a session on a database
// as dbUser on dbName. It must be a pure function of its arguments and the
// agent's copy of the roles (DESIGN.md §2.2); broker/access.Decide wrapped
// with the current roles is the production implementation.
type Authorizer func(id identity.Identity, db DatabaseInfo, dbUser, dbName string) Decision
