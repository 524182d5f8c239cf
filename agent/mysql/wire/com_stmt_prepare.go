package wire

// StmtPrepare is COM_STMT_PREPARE: string<EOF> query with ? placeholders.
// The server answers with StmtPrepareOK, parameter and column definitions,
// or ERR.
type StmtPrepare struct{ Query string }

func (*StmtPrepare) Type() CommandType { return ComStmtPrepare }

func (s *StmtPrepare) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return append(append(dst, byte(ComStmtPrepare)), s.Query...), nil
}
