package events

// Events of the access-request workflow and of sessions the agent ends on
// its own. The request's life is access_request.create, one
// access_request.review per reviewer, and access_request.update when the
// request leaves pending (state approved, denied or expired); all three are
// stored in STATE under state.access_request.<id>, so a restarted broker
// replays the reviews with the request. db.session.terminate goes to AUDIT
// inside the session it ends, just before its db.session.end.

func init() {
	Register[AccessRequestReview]("access_request.review", "TGAR003I",
		"A reviewer approved or denied an access request, with a reason; thresholds decide when the request changes state.")
	Register[SessionTerminate]("db.session.terminate", "TGDB005W",
		"The agent ended a live session: a lock matched it, its certificate or access grant expired, or it was idle too long.")
}

// Review verdicts (AccessRequestReview.Verdict).
const (
	ReviewApprove = "approve"
	ReviewDeny    = "deny"
)

// AccessRequestReview records one reviewer's verdict on a pending request.
// The envelope's user is the reviewer.
type AccessRequestReview struct {
	Envelope
	RequestID string `json:"request_id" jsonschema:"description=Request id"`
	Verdict   string `json:"verdict" jsonschema:"enum=approve,enum=deny,description=The reviewer's verdict"`
	Reason    string `json:"reason,omitempty" jsonschema:"description=The reviewer's comment"`
	// Approvals and Denials count the verdicts including this one, and
	// Needed is the approvals the request's roles ask for, so one event
	// says how far the request is.
	Approvals int `json:"approvals" jsonschema:"description=Approvals so far, this one included"`
	Denials   int `json:"denials" jsonschema:"description=Denials so far, this one included"`
	Needed    int `json:"approvals_needed" jsonschema:"description=Approvals the request needs"`
	// GrantNs is how long the access lasts once approved, in nanoseconds,
	// as the reviewer may shorten it (0 keeps the requested duration).
	GrantNs int64 `json:"grant_ns,omitempty" jsonschema:"description=Access length the reviewer allows, in nanoseconds; 0 keeps the requested one"`
}

// Why the agent ended a session (SessionTerminate.Reason and the reason of
// the db.session.end that follows).
const (
	EndLocked        = "locked"
	EndCertExpired   = "certificate expired"
	EndAccessExpired = "access request expired"
	EndIdleTimeout   = "idle timeout"
)

// SessionTerminate records that the agent ended a live session on its own.
type SessionTerminate struct {
	Envelope
	Session
	Database
	Reason string `json:"reason" jsonschema:"enum=locked,enum=certificate expired,enum=access request expired,enum=idle timeout,description=Why the agent ended the session"`
	// Message is what the client was told, in its protocol's error form.
	Message string `json:"message" jsonschema:"description=What the client was told"`
	LockID  string `json:"lock_id,omitempty" jsonschema:"description=The lock that matched, for reason locked"`
	// RequestID names the access request whose grant ended.
	RequestID string `json:"request_id,omitempty" jsonschema:"description=The access request whose grant ended, for reason access request expired"`
	// IdleNs is how long the client had been silent, for reason idle
	// timeout.
	IdleNs int64 `json:"idle_ns,omitempty" jsonschema:"description=How long the client had sent nothing, in nanoseconds"`
	// Cancel is how the statement running when the session ended was
	// stopped first; closing the connection alone would leave it running.
	Cancel          string `json:"cancel,omitempty" jsonschema:"description=How the agent cancelled the statement that was running before ending the session (a PostgreSQL cancel request, MySQL KILL QUERY on a second connection, a TDS attention); empty when none was running"`
	CancelConfirmed bool   `json:"cancel_confirmed,omitempty" jsonschema:"description=Whether the database answered that the statement stopped before the session was ended"`
	CancelError     string `json:"cancel_error,omitempty" jsonschema:"description=Why the cancel failed or was not confirmed in time; the session was ended anyway"`
	CancelNs        int64  `json:"cancel_ns,omitempty" jsonschema:"description=How long the cancel took, in nanoseconds"`
}
