package wire

import "fmt"

// CommandType is the first byte of a client's command packet (COM_*).
type CommandType uint8

const (
	ComSleep            CommandType = 0x00
	ComQuit             CommandType = 0x01
	ComInitDB           CommandType = 0x02
	ComQuery            CommandType = 0x03
	ComFieldList        CommandType = 0x04
	ComCreateDB         CommandType = 0x05
	ComDropDB           CommandType = 0x06
	ComRefresh          CommandType = 0x07
	ComShutdown         CommandType = 0x08
	ComStatistics       CommandType = 0x09
	ComProcessInfo      CommandType = 0x0a
	ComConnect          CommandType = 0x0b
	ComProcessKill      CommandType = 0x0c
	ComDebug            CommandType = 0x0d
	ComPing             CommandType = 0x0e
	ComTime             CommandType = 0x0f
	ComDelayedInsert    CommandType = 0x10
	ComChangeUser       CommandType = 0x11
	ComBinlogDump       CommandType = 0x12
	ComTableDump        CommandType = 0x13
	ComConnectOut       CommandType = 0x14
	ComRegisterSlave    CommandType = 0x15
	ComStmtPrepare      CommandType = 0x16
	ComStmtExecute      CommandType = 0x17
	ComStmtSendLongData CommandType = 0x18
	ComStmtClose        CommandType = 0x19
	ComStmtReset        CommandType = 0x1a
	ComSetOption        CommandType = 0x1b
	ComStmtFetch        CommandType = 0x1c
	ComDaemon           CommandType = 0x1d
	ComBinlogDumpGTID   CommandType = 0x1e
	ComResetConnection  CommandType = 0x1f
	ComStmtBulkExecute  CommandType = 0xfa // MariaDB
	ComMulti            CommandType = 0xfe // MariaDB
)

var commandNames = [...]string{
	"COM_SLEEP", "COM_QUIT", "COM_INIT_DB", "COM_QUERY", "COM_FIELD_LIST", "COM_CREATE_DB",
	"COM_DROP_DB", "COM_REFRESH", "COM_SHUTDOWN", "COM_STATISTICS", "COM_PROCESS_INFO",
	"COM_CONNECT", "COM_PROCESS_KILL", "COM_DEBUG", "COM_PING", "COM_TIME", "COM_DELAYED_INSERT",
	"COM_CHANGE_USER", "COM_BINLOG_DUMP", "COM_TABLE_DUMP", "COM_CONNECT_OUT", "COM_REGISTER_SLAVE",
	"COM_STMT_PREPARE", "COM_STMT_EXECUTE", "COM_STMT_SEND_LONG_DATA", "COM_STMT_CLOSE",
	"COM_STMT_RESET", "COM_SET_OPTION", "COM_STMT_FETCH", "COM_DAEMON", "COM_BINLOG_DUMP_GTID",
	"COM_RESET_CONNECTION",
}

// String returns the command's protocol name, e.g. "COM_QUERY".
func (t CommandType) String() string {
	switch {
	case int(t) < len(commandNames):
		return commandNames[t]
	case t == ComStmtBulkExecute:
		return "COM_STMT_BULK_EXECUTE"
	case t == ComMulti:
		return "COM_MULTI"
	}
	return fmt.Sprintf("COM_0x%02x", uint8(t))
}

// Command is a decoded client command. Encode appends the command's payload
// (its first byte included) for a connection with capabilities caps.
type Command interface {
	Type() CommandType
	Encode(dst []byte, caps Capabilities) ([]byte, error)
}

// StmtLookup gives DecodeCommand what it needs to know of prepared
// statements to decode COM_STMT_EXECUTE. *Statements implements it.
type StmtLookup interface {
	LookupStmt(id uint32) (StmtInfo, bool)
}

// DecodeCommand decodes a client command payload sent on a connection with
// negotiated capabilities caps. stmts may be nil; COM_STMT_EXECUTE then
// (as for any statement id stmts does not know) returns a *StmtExecute with
// only its fixed fields set, together with an error wrapping
// ErrUnknownStatement. Commands recognised but not decoded (replication,
// COM_REFRESH, MariaDB bulk execute...) come back as *RawCommand. Every
// other failure wraps ErrMalformed. The returned command does not alias
// payload.
func DecodeCommand(payload []byte, caps Capabilities, stmts StmtLookup) (Command, error) {
	if len(payload) == 0 {
		return nil, malformed("empty command packet")
	}
	body := payload[1:]
	switch t := CommandType(payload[0]); t {
	case ComQuit:
		return decodeEmpty(&Quit{}, t, body)
	case ComPing:
		return decodeEmpty(&Ping{}, t, body)
	case ComStatistics:
		return decodeEmpty(&Statistics{}, t, body)
	case ComProcessInfo:
		return decodeEmpty(&ProcessInfo{}, t, body)
	case ComResetConnection:
		return decodeEmpty(&ResetConnection{}, t, body)
	case ComInitDB:
		return &InitDB{Schema: string(body)}, nil
	case ComCreateDB:
		return &CreateDB{Schema: string(body)}, nil
	case ComDropDB:
		return &DropDB{Schema: string(body)}, nil
	case ComQuery:
		q := &Query{}
		return q, q.decode(body, caps)
	case ComFieldList:
		return decodeBody[FieldList](body)
	case ComProcessKill:
		return decodeBody[ProcessKill](body)
	case ComChangeUser:
		u := &ChangeUser{}
		return u, u.decode(body, caps)
	case ComStmtPrepare:
		return &StmtPrepare{Query: string(body)}, nil
	case ComStmtExecute:
		e := &StmtExecute{}
		return e, e.decode(body, caps, stmts)
	case ComStmtSendLongData:
		return decodeBody[StmtSendLongData](body)
	case ComStmtClose:
		return decodeBody[StmtClose](body)
	case ComStmtReset:
		return decodeBody[StmtReset](body)
	case ComSetOption:
		return decodeBody[SetOption](body)
	case ComStmtFetch:
		return decodeBody[StmtFetch](body)
	default:
		return &RawCommand{Cmd: t, Body: cloneBytes(body)}, nil
	}
}

func decodeEmpty(c Command, t CommandType, body []byte) (Command, error) {
	if len(body) != 0 {
		return nil, malformed("%s takes no arguments, got %d bytes", t, len(body))
	}
	return c, nil
}

// RawCommand is a command this package recognises by its first byte but
// does not decode; Body is the payload after that byte.
type RawCommand struct {
	Cmd  CommandType
	Body []byte
}

func (r *RawCommand) Type() CommandType { return r.Cmd }

func (r *RawCommand) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return append(append(dst, byte(r.Cmd)), r.Body...), nil
}

// decodeBody decodes body as a new command of type C, whose body is all it
// needs to decode (no capabilities, no statements). The command comes back
// with the error, as every case of DecodeCommand does.
func decodeBody[C any, P interface {
	*C
	Command
	decode(body []byte) error
}](body []byte) (Command, error) {
	c := P(new(C))
	return c, c.decode(body)
}
