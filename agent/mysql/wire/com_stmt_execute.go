package wire

import "fmt"

// StmtExecute is COM_STMT_EXECUTE: run a prepared statement.
//
//	int<1> 0x17
//	int<4> statement id
//	int<1> flags (cursor type; PARAMETER_COUNT_AVAILABLE 0x08 in MySQL 8)
//	int<4> iteration count (always 1)
//	if num_params > 0, or CLIENT_QUERY_ATTRIBUTES and PARAMETER_COUNT_AVAILABLE:
//	  int<lenenc> parameter_count   if CLIENT_QUERY_ATTRIBUTES
//	  the parameter block: NULL bitmap, new_params_bind_flag, types
//	  (with names under CLIENT_QUERY_ATTRIBUTES) and binary values
//
// num_params comes from the statement's StmtPrepareOK, and when
// new_params_bind_flag is 0 the types are those of an earlier execute;
// parameters sent by COM_STMT_SEND_LONG_DATA have no value here. Hence the
// StmtLookup that DecodeCommand takes.
type StmtExecute struct {
	StatementID    uint32
	Flags          uint8
	IterationCount uint32
	NewParamsBound bool
	Params         []Param
}

// COM_STMT_EXECUTE flags.
const (
	CursorTypeNoCursor      uint8  = 0x00
	CursorTypeReadOnly      uint8  = 0x01
	CursorTypeForUpdate     uint8  = 0x02
	CursorTypeScrollable    uint8  = 0x04
	ParameterCountAvailable uint8  = 0x08
	LastPreparedStatementID uint32 = 0xffffffff // MariaDB: the statement prepared last on this connection
)

func (*StmtExecute) Type() CommandType { return ComStmtExecute }

func (e *StmtExecute) decode(body []byte, caps Capabilities, stmts StmtLookup) error {
	c := cursor{b: body}
	e.StatementID = c.uint32("statement id")
	e.Flags = c.uint8("flags")
	e.IterationCount = c.uint32("iteration count")
	if c.err != nil {
		return c.err
	}
	var info StmtInfo
	ok := false
	if stmts != nil {
		info, ok = stmts.LookupStmt(e.StatementID)
	}
	if !ok {
		return fmt.Errorf("%w: COM_STMT_EXECUTE of statement %d", ErrUnknownStatement, e.StatementID)
	}
	n := info.NumParams
	if caps.Has(ClientQueryAttributes) && (n > 0 || e.Flags&ParameterCountAvailable != 0) {
		pc, _ := c.lenEncInt("parameter_count")
		if c.err != nil {
			return c.err
		}
		if pc < uint64(n) {
			return malformed("COM_STMT_EXECUTE parameter_count %d, statement %d has %d parameters", pc, e.StatementID, n)
		}
		if pc > uint64(c.left())*8 {
			return malformed("COM_STMT_EXECUTE declares %d parameters in %d bytes", pc, c.left())
		}
		n = int(pc)
	}
	if n > 0 {
		e.Params, e.NewParamsBound = readParamBlock(&c, n, caps.Has(ClientQueryAttributes), info.ParamTypes, info.LongData)
	}
	return c.done("COM_STMT_EXECUTE")
}

// Encode writes the command for a statement with len(Params) parameters
// (parameter_count too under CLIENT_QUERY_ATTRIBUTES).
func (e *StmtExecute) Encode(dst []byte, caps Capabilities) ([]byte, error) {
	dst = append(dst, byte(ComStmtExecute))
	dst = appendUint32(dst, e.StatementID)
	dst = append(dst, e.Flags)
	dst = appendUint32(dst, e.IterationCount)
	qa := caps.Has(ClientQueryAttributes)
	if len(e.Params) == 0 && !(qa && e.Flags&ParameterCountAvailable != 0) {
		return dst, nil
	}
	if qa {
		dst = AppendLenEncInt(dst, uint64(len(e.Params)))
	}
	if len(e.Params) == 0 {
		return dst, nil
	}
	return appendParamBlock(dst, e.Params, e.NewParamsBound, qa)
}
