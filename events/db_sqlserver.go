package events

// SQL Server-specific session events (TDS): the upstream login, RPC
// requests with their parameters, cancels (Attention), transaction manager
// requests, bulk loads and database changes. SQL batches are
// db.session.query; every request's answer is db.session.result.

func init() {
	Register[SQLServerLogin]("db.session.sqlserver.login", "TGSQ001I",
		"The agent logged in to SQL Server for a session: how it authenticated, the negotiated TDS version, the server's program and version, and the client's program.")
	Register[SQLServerRPC]("db.session.sqlserver.rpc_request", "TGSQ002I",
		"A SQL Server client called a procedure with an RPC request (sp_executesql, sp_prepare, sp_execute, sp_prepexec or any procedure); carries the statement text where there is one and the parameters decoded.")
	Register[SQLServerAttention]("db.session.sqlserver.attention", "TGSQ003I",
		"A SQL Server client cancelled its running request (Attention).")
	Register[SQLServerTransaction]("db.session.sqlserver.transaction", "TGSQ004I",
		"A SQL Server client sent a transaction manager request: begin, commit, rollback, save point, promote or a distributed transaction request.")
	Register[SQLServerBulkLoad]("db.session.sqlserver.bulk_load", "TGSQ005I",
		"A SQL Server client sent bulk load data (after INSERT BULK); counts rows and bytes and never records the rows.")
	Register[SQLServerDatabaseChange]("db.session.sqlserver.database_change", "TGSQ006I",
		"The SQL Server session's current database changed (ENVCHANGE), e.g. after USE.")
}

// SQLServerLogin records the upstream login of a session.
type SQLServerLogin struct {
	Envelope
	Session
	Database
	AuthMethod        string `json:"db_auth_method" jsonschema:"enum=kerberos-pkinit,enum=kerberos-keytab,enum=rds-iam,enum=sql-password,description=How the agent authenticated to SQL Server"`
	KerberosPrincipal string `json:"db_kerberos_principal,omitempty" jsonschema:"description=Kerberos client principal the agent logged in as"`
	SPN               string `json:"db_spn,omitempty" jsonschema:"description=Service principal name of the SQL Server"`
	TDSVersion        string `json:"db_tds_version" jsonschema:"description=TDS version the server acknowledged, e.g. 7.4"`
	ServerProgram     string `json:"db_server_program,omitempty" jsonschema:"description=Program name of the server's LOGINACK"`
	ServerVersion     string `json:"db_server_version,omitempty" jsonschema:"description=Server version of the LOGINACK, major.minor.build"`
	PacketSize        uint32 `json:"db_packet_size,omitempty" jsonschema:"description=Negotiated packet size in bytes"`
	ClientProgram     string `json:"client_program,omitempty" jsonschema:"description=Application name the client sent in LOGIN7"`
	ClientHost        string `json:"client_host,omitempty" jsonschema:"description=Host name the client sent in LOGIN7"`
	ClientLibrary     string `json:"client_library,omitempty" jsonschema:"description=Client interface library the client named in LOGIN7"`
	ClientEncryption  string `json:"client_encryption,omitempty" jsonschema:"enum=tls,enum=tls-in-tds,enum=login-only,description=How the client side was encrypted: only by the agent's TLS (tls), also by TLS inside TDS for the whole session (tls-in-tds) or for the login packet only (login-only)"`
}

// SQLServerRPC records one procedure call of an RPC request. For the
// system procedures that run statements the statement text is db_query:
// sp_executesql, sp_prepare, sp_prepexec and the cursor procedures carry
// it, and sp_execute gets it from the sp_prepare or sp_prepexec that made
// its handle.
type SQLServerRPC struct {
	Envelope
	Session
	Database
	Procedure            string   `json:"db_procedure" jsonschema:"description=Procedure called: its name, or the name of the well-known procedure id"`
	ProcedureID          uint16   `json:"db_procedure_id,omitempty" jsonschema:"description=Well-known procedure id when the call used one (10 sp_executesql, 11 sp_prepare, 12 sp_execute, 13 sp_prepexec...)"`
	Query                string   `json:"db_query,omitempty" jsonschema:"description=Statement text the call runs or prepares"`
	ParameterDefinitions string   `json:"db_parameter_definitions,omitempty" jsonschema:"description=Parameter declarations of sp_executesql, sp_prepare or sp_prepexec, e.g. @p1 int"`
	Handle               string   `json:"db_prepared_handle,omitempty" jsonschema:"description=Prepared statement or cursor handle the call uses"`
	ParameterNames       []string `json:"db_parameter_names,omitempty" jsonschema:"description=Names of the parameters, in order (empty for positional ones)"`
	Parameters           []string `json:"db_query_parameters,omitempty" jsonschema:"description=Parameter values as text: NULL for NULL, 0x-hex for binary, base64: for single-byte text that is not UTF-8"`
	ParameterTypes       []string `json:"db_parameter_types,omitempty" jsonschema:"description=Parameter types as sent, e.g. int or nvarchar(4000)"`
	OutputParameters     []string `json:"db_output_parameters,omitempty" jsonschema:"description=Names of the parameters passed as OUTPUT"`
	ParametersTruncated  bool     `json:"db_query_parameters_truncated,omitempty" jsonschema:"description=Whether a parameter value was cut to the size limit"`
	CallIndex            int      `json:"db_rpc_call_index" jsonschema:"description=Position of this call in its RPC request, from 0 (a request may batch several calls)"`
	Calls                int      `json:"db_rpc_calls" jsonschema:"description=Number of calls in the RPC request"`
	NoExec               bool     `json:"db_rpc_no_exec,omitempty" jsonschema:"description=The call was batched with NoExecFlag"`
	Redacted             bool     `json:"db_query_redacted,omitempty" jsonschema:"description=Whether a secret (a password literal or the parameter bound to one) was masked in db_query or db_query_parameters; the database received the statement unchanged"`
}

// SQLServerAttention records a cancel.
type SQLServerAttention struct {
	Envelope
	Session
	Database
	Pending int    `json:"db_pending_requests" jsonschema:"description=Requests the server had not finished answering when the client cancelled"`
	Request string `json:"db_request,omitempty" jsonschema:"description=Kind of the request being cancelled: SQLBatch, RPC, transaction manager request or bulk load"`
}

// SQLServerTransaction records a transaction manager request.
type SQLServerTransaction struct {
	Envelope
	Session
	Database
	Request   string `json:"db_tm_request" jsonschema:"enum=TM_GET_DTC_ADDRESS,enum=TM_PROPAGATE_XACT,enum=TM_BEGIN_XACT,enum=TM_PROMOTE_XACT,enum=TM_COMMIT_XACT,enum=TM_ROLLBACK_XACT,enum=TM_SAVE_XACT,description=Transaction manager request type"`
	Name      string `json:"db_transaction_name,omitempty" jsonschema:"description=Transaction or savepoint name"`
	Isolation string `json:"db_isolation_level,omitempty" jsonschema:"description=Isolation level of the transaction begun"`
	BeginNew  bool   `json:"db_begin_new,omitempty" jsonschema:"description=A commit or rollback that begins a new transaction"`
}

// SQLServerBulkLoad records a bulk load message.
type SQLServerBulkLoad struct {
	Envelope
	Session
	Database
	Columns int    `json:"db_columns" jsonschema:"description=Columns of the loaded rows"`
	Rows    uint64 `json:"db_rows" jsonschema:"description=Rows in this bulk load message"`
	Bytes   uint64 `json:"db_bytes" jsonschema:"description=Bytes of bulk load data"`
}

// SQLServerDatabaseChange records a change of the session's database.
type SQLServerDatabaseChange struct {
	Envelope
	Session
	Database
	From string `json:"db_name_from" jsonschema:"description=Database before the change"`
	To   string `json:"db_name_to" jsonschema:"description=Database after the change"`
}
