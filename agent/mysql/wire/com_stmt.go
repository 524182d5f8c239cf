package wire

// StmtSendLongData is COM_STMT_SEND_LONG_DATA: one piece of a parameter's
// value, sent before COM_STMT_EXECUTE. The server sends no response.
//
//	int<1> 0x18, int<4> statement id, int<2> parameter id, string<EOF> data
type StmtSendLongData struct {
	StatementID uint32
	ParamID     uint16
	Data        []byte
}

func (*StmtSendLongData) Type() CommandType { return ComStmtSendLongData }

func (d *StmtSendLongData) decode(body []byte) error {
	c := cursor{b: body}
	d.StatementID = c.uint32("statement id")
	d.ParamID = c.uint16("parameter id")
	d.Data = cloneBytes(c.rest())
	if d.Data == nil && c.err == nil {
		d.Data = []byte{}
	}
	return c.err
}

func (d *StmtSendLongData) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	dst = appendUint32(append(dst, byte(ComStmtSendLongData)), d.StatementID)
	dst = appendUint16(dst, d.ParamID)
	return append(dst, d.Data...), nil
}

// StmtClose is COM_STMT_CLOSE: int<4> statement id. No response.
type StmtClose struct{ StatementID uint32 }

func (*StmtClose) Type() CommandType { return ComStmtClose }

func (s *StmtClose) decode(body []byte) error {
	c := cursor{b: body}
	s.StatementID = c.uint32("statement id")
	return c.done("COM_STMT_CLOSE")
}

func (s *StmtClose) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return appendUint32(append(dst, byte(ComStmtClose)), s.StatementID), nil
}

// StmtReset is COM_STMT_RESET: int<4> statement id; drops long data and
// closes the statement's cursor. The server answers OK or ERR.
type StmtReset struct{ StatementID uint32 }

func (*StmtReset) Type() CommandType { return ComStmtReset }

func (s *StmtReset) decode(body []byte) error {
	c := cursor{b: body}
	s.StatementID = c.uint32("statement id")
	return c.done("COM_STMT_RESET")
}

func (s *StmtReset) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return appendUint32(append(dst, byte(ComStmtReset)), s.StatementID), nil
}

// StmtFetch is COM_STMT_FETCH: int<4> statement id, int<4> number of rows
// to fetch from the statement's open cursor. The server answers with binary
// rows and EOF (or OK under CLIENT_DEPRECATE_EOF), or ERR.
type StmtFetch struct {
	StatementID uint32
	NumRows     uint32
}

func (*StmtFetch) Type() CommandType { return ComStmtFetch }

func (f *StmtFetch) decode(body []byte) error {
	c := cursor{b: body}
	f.StatementID = c.uint32("statement id")
	f.NumRows = c.uint32("number of rows")
	return c.done("COM_STMT_FETCH")
}

func (f *StmtFetch) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	dst = appendUint32(append(dst, byte(ComStmtFetch)), f.StatementID)
	return appendUint32(dst, f.NumRows), nil
}
