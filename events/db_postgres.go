package events

// PostgreSQL-specific session events: the steps of the extended query
// protocol, COPY, function calls and cancel requests. Statements sent with
// the simple protocol are db.session.query; every statement's answer is
// db.session.result.

func init() {
	Register[PostgresParse]("db.session.postgres.parse", "TGPG001I",
		"A PostgreSQL client prepared a statement (extended protocol Parse).")
	Register[PostgresBind]("db.session.postgres.bind", "TGPG002I",
		"A PostgreSQL client bound parameters to a prepared statement (extended protocol Bind) without executing the portal in the same message batch; a Bind followed by its Execute is recorded by the execute event alone.")
	Register[PostgresExecute]("db.session.postgres.execute", "TGPG003I",
		"A PostgreSQL client executed a portal (extended protocol Execute); carries the statement text, the statement and portal names and the bound parameters.")
	Register[PostgresClose]("db.session.postgres.close", "TGPG004I",
		"A PostgreSQL client closed a prepared statement or a portal.")
	Register[PostgresFunctionCall]("db.session.postgres.function_call", "TGPG005I",
		"A PostgreSQL client called a function by OID (FunctionCall message).")
	Register[PostgresCopy]("db.session.postgres.copy", "TGPG006I",
		"Summary of the COPY data a PostgreSQL client sent (at least every 8 MiB or second, and when it finished or aborted the COPY); counts bytes and never records the rows. Stored without holding back the data: the COPY statement itself was recorded before it ran.")
	RegisterOutcome[PostgresCancel]("db.session.postgres.cancel", "TGPG007I", "TGPG007W",
		"A PostgreSQL client asked to cancel the running statement of a session; records whether it was forwarded. A request with a key no session holds is forwarded nowhere and recorded as db.session.rejected (reason unknown_cancel_key).")
}

// PostgresParse records a Parse message.
type PostgresParse struct {
	Envelope
	Session
	Database
	StatementName string   `json:"db_statement_name" jsonschema:"description=Name of the prepared statement; empty for the unnamed statement"`
	Query         string   `json:"db_query" jsonschema:"description=Statement text"`
	ParameterOIDs []uint32 `json:"db_parameter_oids,omitempty" jsonschema:"description=Parameter type OIDs declared by the client (0 lets the server infer)"`
	Redacted      bool     `json:"db_query_redacted,omitempty" jsonschema:"description=Whether a secret (a password literal or the parameter bound to one) was masked in db_query or db_query_parameters; the database received the statement unchanged"`
}

// PostgresBind records a Bind message whose portal is not executed in the
// same client batch (an Execute that follows at once is one
// PostgresExecute carrying the parameters, so a prepared statement costs
// one event per execution). Parameters are rendered as text: text values
// as sent, binary values decoded by type OID where known, otherwise base64;
// NULL is the unquoted word NULL.
type PostgresBind struct {
	Envelope
	Session
	Database
	StatementName       string   `json:"db_statement_name" jsonschema:"description=Prepared statement bound"`
	PortalName          string   `json:"db_portal_name" jsonschema:"description=Portal created; empty for the unnamed portal"`
	Parameters          []string `json:"db_query_parameters,omitempty" jsonschema:"description=Bound parameter values as text"`
	ParametersTruncated bool     `json:"db_query_parameters_truncated,omitempty" jsonschema:"description=Whether a parameter value was cut to the size limit"`
	Redacted            bool     `json:"db_query_redacted,omitempty" jsonschema:"description=Whether a secret (a password literal or the parameter bound to one) was masked in db_query or db_query_parameters; the database received the statement unchanged"`
}

// PostgresExecute records an Execute message with the statement it runs and
// the parameters bound to its portal, so one event says what ran without
// joining it to Parse and Bind.
type PostgresExecute struct {
	Envelope
	Session
	Database
	PortalName          string   `json:"db_portal_name" jsonschema:"description=Portal executed"`
	StatementName       string   `json:"db_statement_name" jsonschema:"description=Prepared statement behind the portal"`
	Query               string   `json:"db_query" jsonschema:"description=Statement text"`
	Parameters          []string `json:"db_query_parameters,omitempty" jsonschema:"description=Bound parameter values as text"`
	ParametersTruncated bool     `json:"db_query_parameters_truncated,omitempty" jsonschema:"description=Whether a parameter value was cut to the size limit"`
	MaxRows             uint32   `json:"db_max_rows,omitempty" jsonschema:"description=Row limit of this execution; 0 means all rows"`
	Redacted            bool     `json:"db_query_redacted,omitempty" jsonschema:"description=Whether a secret (a password literal or the parameter bound to one) was masked in db_query or db_query_parameters; the database received the statement unchanged"`
}

// PostgresClose records a Close message.
type PostgresClose struct {
	Envelope
	Session
	Database
	Kind string `json:"db_close_kind" jsonschema:"enum=statement,enum=portal,description=What was closed"`
	Name string `json:"db_close_name" jsonschema:"description=Name of the statement or portal closed"`
}

// PostgresFunctionCall records a FunctionCall message.
type PostgresFunctionCall struct {
	Envelope
	Session
	Database
	FunctionOID uint32   `json:"db_function_oid" jsonschema:"description=OID of the function called"`
	Arguments   []string `json:"db_function_args,omitempty" jsonschema:"description=Arguments: text as sent and binary as base64"`
}

// PostgresCopy summarises COPY data from the client: phase data at least
// every 8 MiB or second of a long COPY, done or fail when the client ends
// or aborts it. CopyData carries rows, never a statement, and the COPY
// statement was stored before it reached the database, so these summaries
// are stored asynchronously (like results) and never hold back the data.
type PostgresCopy struct {
	Envelope
	Session
	Database
	Phase      string `json:"db_copy_phase" jsonschema:"enum=data,enum=done,enum=fail,description=data while rows flow; done or fail when the client ends the COPY"`
	Messages   uint64 `json:"db_copy_messages" jsonschema:"description=CopyData messages since the previous summary"`
	Bytes      uint64 `json:"db_copy_bytes" jsonschema:"description=Bytes of COPY data since the previous summary"`
	TotalBytes uint64 `json:"db_copy_total_bytes" jsonschema:"description=Bytes of COPY data since the COPY began"`
	Reason     string `json:"db_copy_fail_reason,omitempty" jsonschema:"description=Reason the client gave when it aborted the COPY"`
}

// PostgresCancel records a cancel request, in the session it targets; a
// request whose key no session holds is recorded outside any session, with
// the process id it named in db_backend_pid.
type PostgresCancel struct {
	Envelope
	Session
	Database
	Status
	ClientAddr string `json:"client_addr,omitempty" jsonschema:"description=Remote address of the connection that asked to cancel"`
	BackendPID uint32 `json:"db_backend_pid" jsonschema:"description=Process id of the database backend the request was forwarded to"`
	TLS        bool   `json:"tls" jsonschema:"description=Whether the request came over TLS with a user certificate (libpq before 17 sends cancel requests without TLS)"`
}
