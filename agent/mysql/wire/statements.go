package wire

// StmtInfo is what is known of one prepared statement.
type StmtInfo struct {
	ID         uint32
	NumParams  int
	NumColumns int
	// ParamTypes are the types bound by the last COM_STMT_EXECUTE that sent
	// them; nil before the first.
	ParamTypes []ParamType
	// LongData holds what COM_STMT_SEND_LONG_DATA sent since the last
	// execute or reset, indexed by parameter; nil when nothing was sent.
	LongData []LongData
}

// DefaultMaxLongData is how many bytes of long data Statements keeps per
// parameter when MaxLongData is 0.
const DefaultMaxLongData = 1 << 20

// Statements tracks the prepared statements of one connection, as the
// server does, so COM_STMT_EXECUTE can be decoded. Feed it every prepare
// response with Prepared and every decoded command with Apply. It is not
// safe for concurrent use.
type Statements struct {
	// MaxLongData caps the long data kept per parameter (the rest is counted
	// as truncated); 0 means DefaultMaxLongData.
	MaxLongData int

	m    map[uint32]*StmtInfo
	last uint32
	has  bool
}

// NewStatements returns an empty tracker.
func NewStatements() *Statements { return &Statements{m: make(map[uint32]*StmtInfo)} }

// Len returns the number of open statements.
func (s *Statements) Len() int { return len(s.m) }

// Prepared records a successful COM_STMT_PREPARE.
func (s *Statements) Prepared(ok *StmtPrepareOK) {
	if s.m == nil {
		s.m = make(map[uint32]*StmtInfo)
	}
	s.m[ok.StatementID] = &StmtInfo{ID: ok.StatementID, NumParams: int(ok.NumParams), NumColumns: int(ok.NumColumns)}
	s.last, s.has = ok.StatementID, true
}

// LookupStmt implements StmtLookup. MariaDB's id 0xffffffff names the
// statement prepared last.
func (s *Statements) LookupStmt(id uint32) (StmtInfo, bool) {
	if id == LastPreparedStatementID && s.has {
		id = s.last
	}
	st, ok := s.m[id]
	if !ok {
		return StmtInfo{}, false
	}
	return *st, true
}

// Apply updates the tracker with a command the client sent, as the server
// will: bound parameter types, long data, statements closed or reset.
func (s *Statements) Apply(cmd Command) {
	switch c := cmd.(type) {
	case *StmtExecute:
		st := s.get(c.StatementID)
		if st == nil {
			return
		}
		if c.NewParamsBound && len(c.Params) >= st.NumParams {
			types := st.ParamTypes[:0]
			for _, p := range c.Params[:st.NumParams] {
				types = append(types, p.ParamType)
			}
			st.ParamTypes = types
		}
		clearLongData(st)
	case *StmtSendLongData:
		st := s.get(c.StatementID)
		if st == nil || int(c.ParamID) >= st.NumParams {
			return // the server reports the error at execute
		}
		if st.LongData == nil {
			st.LongData = make([]LongData, st.NumParams)
		}
		ld := &st.LongData[c.ParamID]
		ld.Sent = true
		limit := s.MaxLongData
		if limit <= 0 {
			limit = DefaultMaxLongData
		}
		room := limit - len(ld.Data)
		if len(c.Data) > room {
			ld.Data = append(ld.Data, c.Data[:max(room, 0)]...)
			ld.Truncated = true
		} else {
			ld.Data = append(ld.Data, c.Data...)
		}
	case *StmtReset:
		if st := s.get(c.StatementID); st != nil {
			clearLongData(st)
		}
	case *StmtClose:
		id := c.StatementID
		if id == LastPreparedStatementID && s.has {
			id = s.last
		}
		delete(s.m, id)
	case *ResetConnection, *ChangeUser:
		clear(s.m)
		s.has = false
	}
}

func (s *Statements) get(id uint32) *StmtInfo {
	if id == LastPreparedStatementID && s.has {
		id = s.last
	}
	return s.m[id]
}

func clearLongData(st *StmtInfo) {
	for i := range st.LongData {
		st.LongData[i] = LongData{Data: st.LongData[i].Data[:0]}
	}
}
