package events

// MySQL- and MariaDB-specific session events: the connection's negotiated
// details, prepared statements (with their parameters decoded), database
// changes, and the protocol's other commands. Text statements (COM_QUERY)
// are db.session.query; every command's answer is db.session.result.

func init() {
	Register[MySQLConnected]("db.session.mysql.connected", "TGMY001I",
		"The agent authenticated to a MySQL or MariaDB server for a session: server version, connection id and negotiated capabilities.")
	Register[MySQLPrepare]("db.session.mysql.prepare", "TGMY002I",
		"A MySQL client prepared a statement (COM_STMT_PREPARE).")
	Register[MySQLExecute]("db.session.mysql.execute", "TGMY003I",
		"A MySQL client executed a prepared statement (COM_STMT_EXECUTE); carries the statement text and its parameters' types and values.")
	Register[MySQLSendLongData]("db.session.mysql.send_long_data", "TGMY004I",
		"A MySQL client sent part of a parameter's value ahead of execution (COM_STMT_SEND_LONG_DATA); the value itself is recorded with the execute.")
	Register[MySQLStatement]("db.session.mysql.statement", "TGMY005I",
		"A MySQL client closed, reset or fetched rows from a prepared statement (COM_STMT_CLOSE, COM_STMT_RESET, COM_STMT_FETCH).")
	RegisterOutcome[MySQLChangeDB]("db.session.mysql.change_db", "TGMY006I", "TGMY006W",
		"A MySQL client asked to change the current database (COM_INIT_DB or a USE statement); records the access decision.")
	Register[MySQLFieldList]("db.session.mysql.field_list", "TGMY007I",
		"A MySQL client listed the columns of a table (COM_FIELD_LIST).")
	RegisterOutcome[MySQLCommand]("db.session.mysql.command", "TGMY008I", "TGMY008W",
		"A MySQL client sent a command other than a statement: ping, quit, kill, set option, reset connection, create or drop database, statistics...; records whether it was forwarded.")
	RegisterOutcome[MySQLLocalInfile]("db.session.mysql.local_infile", "TGMY009I", "TGMY009W",
		"The database asked a MySQL client for a file (LOAD DATA LOCAL INFILE): the file name and a summary of the data the client sent (bytes, packets), never the data; or that a role refused it and the database was sent an empty file. The statement itself was recorded before it ran.")
}

// MySQLConnected records the upstream connection of a session once the
// agent has authenticated to the database.
type MySQLConnected struct {
	Envelope
	Session
	Database
	ServerVersion string   `json:"db_server_version" jsonschema:"description=Version string of the database server's greeting"`
	ConnectionID  uint32   `json:"db_connection_id" jsonschema:"description=The server's connection (thread) id; the general log's thread id"`
	Capabilities  string   `json:"db_capabilities" jsonschema:"description=Capability flags negotiated between the client and the server, joined by |"`
	AuthPlugin    string   `json:"db_auth_plugin,omitempty" jsonschema:"description=Authentication plugin the server finally used with the agent's certificate"`
	ClientProgram string   `json:"client_program,omitempty" jsonschema:"description=program_name or _client_name connection attribute of the client"`
	Attributes    []string `json:"client_attributes,omitempty" jsonschema:"description=Connection attributes the client sent, as key=value"`
}

// MySQLPrepare records COM_STMT_PREPARE. The statement id the server gives
// it appears on the executes that use it.
type MySQLPrepare struct {
	Envelope
	Session
	Database
	Query    string `json:"db_query" jsonschema:"description=Statement text with ? placeholders"`
	Redacted bool   `json:"db_query_redacted,omitempty" jsonschema:"description=Whether a secret (a password literal or the parameter bound to one) was masked in db_query or db_query_parameters; the database received the statement unchanged"`
}

// MySQLExecute records COM_STMT_EXECUTE with the statement it runs, so one
// event says what ran and with which values.
type MySQLExecute struct {
	Envelope
	Session
	Database
	StatementID         uint32   `json:"db_statement_id" jsonschema:"description=Prepared statement id the server assigned"`
	Query               string   `json:"db_query,omitempty" jsonschema:"description=Statement text as prepared; empty when the statement is unknown to the agent"`
	Parameters          []string `json:"db_query_parameters,omitempty" jsonschema:"description=Parameter values as text: NULL for NULL, base64: and the encoding for bytes that are not UTF-8"`
	ParameterTypes      []string `json:"db_parameter_types,omitempty" jsonschema:"description=Parameter types as bound (MYSQL_TYPE_ names without the prefix, UNSIGNED where flagged)"`
	ParametersTruncated bool     `json:"db_query_parameters_truncated,omitempty" jsonschema:"description=Whether a parameter value was cut to the size limit"`
	CursorType          uint8    `json:"db_cursor_type,omitempty" jsonschema:"description=Cursor flags of the execute (1 read-only); rows then come with COM_STMT_FETCH"`
	UnknownStatement    bool     `json:"db_unknown_statement,omitempty" jsonschema:"description=The statement id was never prepared on this session (the server refuses it); parameters could not be decoded"`
	Redacted            bool     `json:"db_query_redacted,omitempty" jsonschema:"description=Whether a secret (a password literal or the parameter bound to one) was masked in db_query or db_query_parameters; the database received the statement unchanged"`
}

// MySQLSendLongData records COM_STMT_SEND_LONG_DATA. The bytes are not
// copied here: the execute that follows carries the parameter's value.
type MySQLSendLongData struct {
	Envelope
	Session
	Database
	StatementID uint32 `json:"db_statement_id" jsonschema:"description=Prepared statement id"`
	ParamID     uint16 `json:"db_parameter_id" jsonschema:"description=Index of the parameter, from 0"`
	Bytes       uint64 `json:"db_bytes" jsonschema:"description=Bytes of data in this piece"`
}

// MySQLStatement records COM_STMT_CLOSE, COM_STMT_RESET and COM_STMT_FETCH.
type MySQLStatement struct {
	Envelope
	Session
	Database
	Command     string `json:"db_command" jsonschema:"enum=COM_STMT_CLOSE,enum=COM_STMT_RESET,enum=COM_STMT_FETCH,description=What was done to the statement"`
	StatementID uint32 `json:"db_statement_id" jsonschema:"description=Prepared statement id"`
	Query       string `json:"db_query,omitempty" jsonschema:"description=Statement text as prepared, when known"`
	FetchRows   uint32 `json:"db_fetch_rows,omitempty" jsonschema:"description=Rows asked for by COM_STMT_FETCH"`
	Redacted    bool   `json:"db_query_redacted,omitempty" jsonschema:"description=Whether a secret (a password literal or the parameter bound to one) was masked in db_query or db_query_parameters; the database received the statement unchanged"`
}

// MySQLChangeDB records a request to change the current database, allowed
// or refused by the roles' db_names.
type MySQLChangeDB struct {
	Envelope
	Session
	Database
	Status
	Schema  string `json:"db_schema" jsonschema:"description=Database the client asked to use"`
	Command string `json:"db_command" jsonschema:"enum=COM_INIT_DB,enum=COM_QUERY,description=COM_INIT_DB or a USE statement sent with COM_QUERY"`
	Query   string `json:"db_query,omitempty" jsonschema:"description=The statement, for USE"`
	Rule    string `json:"rule,omitempty" jsonschema:"description=The role rule that decided"`
}

// MySQLFieldList records COM_FIELD_LIST.
type MySQLFieldList struct {
	Envelope
	Session
	Database
	Table    string `json:"db_table" jsonschema:"description=Table whose columns were listed"`
	Wildcard string `json:"db_wildcard,omitempty" jsonschema:"description=Column name pattern"`
}

// MySQLCommand records any other client command.
type MySQLCommand struct {
	Envelope
	Session
	Database
	Status
	Command  string `json:"db_command" jsonschema:"description=Protocol name of the command, e.g. COM_PING"`
	Argument string `json:"db_command_argument,omitempty" jsonschema:"description=The command's argument: connection id for COM_PROCESS_KILL, option for COM_SET_OPTION, database for COM_CREATE_DB and COM_DROP_DB"`
}

// MySQLLocalInfile records the file a LOAD DATA LOCAL INFILE statement
// made the database ask for, and how much the client sent of it. The
// statement is its own query event; this one follows the data.
type MySQLLocalInfile struct {
	Envelope
	Session
	Database
	Status
	Filename string `json:"db_local_infile" jsonschema:"description=File name the database asked the client for, as the statement wrote it"`
	Bytes    uint64 `json:"db_local_infile_bytes" jsonschema:"description=Bytes of file data the client sent (payload bytes, without packet headers)"`
	Packets  uint64 `json:"db_local_infile_packets" jsonschema:"description=Data packets the client sent, without the empty one that ends the file"`
	Refused  bool   `json:"db_local_infile_refused,omitempty" jsonschema:"description=A role refuses LOCAL INFILE: the client was not asked for the file, the database got an empty one and the client an error"`
}
