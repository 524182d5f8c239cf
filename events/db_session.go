package events

// Events common to every database protocol. Protocol-specific events live in
// db_<protocol>.go files.

func init() {
	RegisterOutcome[SessionStart]("db.session.start", "TGDB000I", "TGDB000W",
		"A client asked to open a database session; records the access decision and the rule that decided it.")
	Register[SessionEnd]("db.session.end", "TGDB001I",
		"A database session ended; records its totals and why it ended.")
	Register[Query]("db.session.query", "TGDB002I",
		"A client sent a statement to the database.")
	RegisterOutcome[Result]("db.session.result", "TGDB003I", "TGDB003W",
		"The database answered a statement: command tag, rows, bytes, error and duration.")
	Register[MalformedPacket]("db.session.malformed_packet", "TGDB004E",
		"A client or server sent wire data that did not decode; the connection was closed and nothing was forwarded.")
}

// SessionStart records the access decision for a new session.
type SessionStart struct {
	Envelope
	Session
	Database
	Status
	// ClientAddr is the remote address of the client connection.
	ClientAddr string `json:"client_addr,omitempty" jsonschema:"description=Remote address of the client"`
	// Rule names the role rule that decided, e.g. "role access: allow db_users".
	Rule string `json:"rule,omitempty" jsonschema:"description=The role rule that decided access"`
	// AuditMode is strict or async.
	AuditMode string `json:"audit_mode,omitempty" jsonschema:"enum=strict,enum=async,description=How this session is audited"`
	// StartupParameters are the client's own settings for the session
	// (PostgreSQL startup parameters: application_name, options...).
	StartupParameters []string `json:"db_startup_parameters,omitempty" jsonschema:"description=Startup parameters the client sent, as name=value (PostgreSQL: application_name, client_encoding, options...)"`
}

// SessionEnd records the totals of a finished session.
type SessionEnd struct {
	Envelope
	Session
	Database
	Reason     string `json:"reason" jsonschema:"description=Why the session ended, e.g. client closed, server closed, lock, certificate expired, idle timeout"`
	Statements uint64 `json:"db_statements" jsonschema:"description=Statements sent by the client"`
	Rows       uint64 `json:"db_rows" jsonschema:"description=Rows returned or affected in total"`
	Errors     uint64 `json:"db_errors" jsonschema:"description=Statements that ended in an error"`
	BytesIn    uint64 `json:"bytes_in" jsonschema:"description=Bytes received from the client"`
	BytesOut   uint64 `json:"bytes_out" jsonschema:"description=Bytes sent to the client"`
	DurationNs int64  `json:"db_duration_ns" jsonschema:"description=Session length in nanoseconds"`
}

// Query records a statement sent by the client.
type Query struct {
	Envelope
	Session
	Database
	Query      string   `json:"db_query" jsonschema:"description=Statement text"`
	Parameters []string `json:"db_query_parameters,omitempty" jsonschema:"description=Bound parameter values, as text"`
	Redacted   bool     `json:"db_query_redacted,omitempty" jsonschema:"description=Whether a secret (a password literal or the parameter bound to one) was masked in db_query or db_query_parameters; the database received the statement unchanged"`
}

// Result records how the database answered one statement.
type Result struct {
	Envelope
	Session
	Database
	Status
	CommandTag   string `json:"db_command_tag,omitempty" jsonschema:"description=Command tag or summary, e.g. SELECT 1"`
	Rows         uint64 `json:"db_rows" jsonschema:"description=Rows returned or affected"`
	Bytes        uint64 `json:"db_bytes" jsonschema:"description=Bytes of the answer"`
	Warnings     uint64 `json:"db_warnings,omitempty" jsonschema:"description=Warnings reported"`
	ErrorCode    string `json:"db_error_code,omitempty" jsonschema:"description=SQLSTATE or vendor error code"`
	ErrorMessage string `json:"db_error_message,omitempty" jsonschema:"description=Error text from the database"`
	DurationNs   int64  `json:"db_duration_ns" jsonschema:"description=Time from statement to complete answer, in nanoseconds"`
}

// MalformedPacket records wire data that could not be decoded.
type MalformedPacket struct {
	Envelope
	Session
	Database
	// Direction is client or server.
	Direction string `json:"direction" jsonschema:"enum=client,enum=server,description=Who sent the malformed data"`
	Reason    string `json:"reason" jsonschema:"description=What was wrong with it"`
	// Length is the declared or received length of the offending packet.
	Length int64 `json:"packet_length" jsonschema:"description=Declared or received length of the offending packet"`
	// Prefix is up to 64 bytes of the packet, hex encoded; never the whole.
	Prefix string `json:"packet_prefix,omitempty" jsonschema:"description=First bytes of the packet, hex"`
}
