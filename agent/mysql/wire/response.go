package wire

// Response summarises the server's complete response to one command.
type Response struct {
	Command CommandType
	// Results counts OK packets and result sets: more than one when
	// SERVER_MORE_RESULTS_EXISTS chained them (multi-statements, CALL).
	Results      int
	AffectedRows uint64 // summed over the results
	LastInsertID uint64 // the last non-zero one
	Rows         uint64 // rows returned, summed over the result sets
	Columns      int    // columns of the last result set
	Bytes        uint64 // payload bytes of every packet of the response
	Warnings     uint32 // summed over the results
	Status       StatusFlags
	Info         string // the last OK packet's info, e.g. "Rows matched: 1  Changed: 1  Warnings: 0"

	Failed       bool // the response ended with ERR
	ErrorCode    uint16
	SQLState     string
	ErrorMessage string

	// Prepare is the COM_STMT_PREPARE_OK of a successful COM_STMT_PREPARE.
	Prepare StmtPrepareOK
	// Statistics is the COM_STATISTICS string.
	Statistics string
	// LocalInfile is the file name of a LOCAL INFILE request (0xfb); the
	// client then sends the file's contents before the final OK or ERR.
	LocalInfile          string
	LocalInfileRequested bool
	// CursorOpened: COM_STMT_EXECUTE opened a cursor (rows follow only on
	// COM_STMT_FETCH).
	CursorOpened bool
	// Schema is the current database the server reported in an OK packet's
	// session state (SESSION_TRACK_SCHEMA, under CLIENT_SESSION_TRACK) when
	// SchemaChanged is set.
	Schema        string
	SchemaChanged bool
}

// MaxColumns is the most columns a result set can have: COM_STMT_PREPARE_OK
// counts them in two bytes, and MariaDB returns that many to a query.
// Columns are counted, not kept, so the limit costs no memory.
const MaxColumns = 0xffff

type respState uint8

const (
	stDone              respState = iota
	stFirst                       // OK, ERR, LOCAL INFILE request or column count
	stColumns                     // column definitions of a result set
	stColumnsEOF                  // the EOF after them (without CLIENT_DEPRECATE_EOF)
	stRows                        // rows until EOF/OK(0xfe) or ERR
	stLocalInfileEnd              // OK or ERR after the client sent the file
	stPrepareFirst                // COM_STMT_PREPARE_OK or ERR
	stPrepareParams               // parameter definitions
	stPrepareParamsEOF            //
	stPrepareColumns              // column definitions
	stPrepareColumnsEOF           //
	stFieldList                   // COM_FIELD_LIST column definitions until EOF or ERR
	stStatistics                  // one string
	stOK                          // OK or ERR (EOF too for COM_SET_OPTION)
	stAuth                        // COM_CHANGE_USER: auth exchange until OK or ERR
)

// ResponseDecoder follows the server's packets after a command and tells
// when the response is complete. Call Begin with the command, then Feed
// each server payload until it reports done; Response then holds the
// summary. Rows are counted and measured, not decoded.
//
// MariaDB progress reports (ERR 0xffff) are skipped wherever they come.
type ResponseDecoder struct {
	caps   Capabilities
	state  respState
	left   int // column or parameter definitions still to come
	binary bool
	resp   Response
}

// NewResponseDecoder returns a decoder for a connection whose negotiated
// capabilities are caps.
func NewResponseDecoder(caps Capabilities) *ResponseDecoder {
	return &ResponseDecoder{caps: caps}
}

// SetCapabilities changes the negotiated capabilities.
func (d *ResponseDecoder) SetCapabilities(caps Capabilities) { d.caps = caps }

// ExpectsResponse reports whether the server answers the command at all
// (COM_QUIT, COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA get no response).
func ExpectsResponse(cmd CommandType) bool {
	switch cmd {
	case ComQuit, ComStmtClose, ComStmtSendLongData:
		return false
	}
	return true
}

// Begin starts following the response to a command and reports whether one
// is expected; if not, the response is already complete (Done is true).
func (d *ResponseDecoder) Begin(cmd CommandType) bool {
	d.resp = Response{Command: cmd}
	d.binary = cmd == ComStmtExecute || cmd == ComStmtFetch
	d.left = 0
	switch cmd {
	case ComQuit, ComStmtClose, ComStmtSendLongData:
		d.state = stDone
		return false
	case ComQuery, ComStmtExecute, ComProcessInfo:
		d.state = stFirst
	case ComStmtFetch:
		d.state = stRows
	case ComStmtPrepare:
		d.state = stPrepareFirst
	case ComFieldList:
		d.state = stFieldList
	case ComStatistics:
		d.state = stStatistics
	case ComChangeUser:
		d.state = stAuth
	default:
		d.state = stOK
	}
	return true
}

// Done reports whether the response is complete.
func (d *ResponseDecoder) Done() bool { return d.state == stDone }

// LocalInfile returns the file name when the packet just fed was a LOCAL
// INFILE request: the server now waits for the client's file.
func (d *ResponseDecoder) LocalInfile() (string, bool) {
	if d.state != stLocalInfileEnd {
		return "", false
	}
	return d.resp.LocalInfile, true
}

// Response returns the summary so far (complete once Done). It is a copy:
// the next Begin does not change it.
func (d *ResponseDecoder) Response() Response { return d.resp }

// isTerminator reports whether a 0xfe packet ends column definitions or
// rows: an EOF packet, or under CLIENT_DEPRECATE_EOF an OK packet with a
// 0xfe header, which is shorter than 0xffffff bytes where a text row
// beginning with 0xfe is longer.
func (d *ResponseDecoder) isTerminator(p []byte) bool {
	if len(p) == 0 || p[0] != EOFHeader {
		return false
	}
	if d.caps.Has(ClientDeprecateEOF) {
		return len(p) < MaxChunk
	}
	return len(p) < 9
}

// Feed takes the next server payload of the response and reports whether
// the response is now complete. A payload that does not fit the state the
// response is in gives an error wrapping ErrMalformed.
func (d *ResponseDecoder) Feed(p []byte) (done bool, err error) {
	return d.feed(p, len(p))
}

// FeedHead is Feed for a payload of total bytes of which only the first
// len(head) are given, so a proxy need not hold a large row in memory to
// follow the response. head must hold at least the first min(total, 1 MiB)
// bytes: every packet but a row or a column's default value is smaller.
func (d *ResponseDecoder) FeedHead(head []byte, total int) (done bool, err error) {
	if len(head) > total {
		return false, malformed("packet head of %d bytes for a payload of %d", len(head), total)
	}
	if len(head) < total && len(head) < min(total, 1<<20) {
		return false, malformed("packet head of %d bytes is too short for a payload of %d", len(head), total)
	}
	return d.feed(head, total)
}

func (d *ResponseDecoder) feed(p []byte, total int) (done bool, err error) {
	if d.state == stDone {
		return true, malformed("server sent a %d-byte packet after the response to %s was complete", total, d.resp.Command)
	}
	d.resp.Bytes += uint64(total)
	if len(p) < total {
		// Only rows are this large; anything else must be whole.
		if d.state != stRows || (d.binary && p[0] != 0x00) {
			return false, malformed("%d-byte packet in the response to %s where a row was not expected", total, d.resp.Command)
		}
		d.resp.Rows++
		return false, nil
	}
	if len(p) == 0 {
		return false, malformed("empty packet in the response to %s", d.resp.Command)
	}
	if p[0] == ErrHeader {
		if IsProgressReport(p) {
			return false, nil
		}
		return d.fail(p)
	}
	switch d.state {
	case stFirst:
		return d.first(p)
	case stColumns, stPrepareParams, stPrepareColumns, stFieldList:
		if d.state == stFieldList && d.isTerminator(p) {
			return d.eofOrOK(p, true)
		}
		var col ColumnDefinition41
		if err := col.Decode(p, d.caps); err != nil {
			return false, err
		}
		if d.state == stFieldList {
			d.resp.Columns++
			return false, nil
		}
		d.left--
		if d.left > 0 {
			return false, nil
		}
		return d.afterDefinitions()
	case stColumnsEOF, stPrepareParamsEOF, stPrepareColumnsEOF:
		var eof EOFPacket
		if err := eof.Decode(p, d.caps); err != nil {
			return false, malformed("expected EOF after definitions: %v", unwrapMalformed(err))
		}
		d.resp.Status = eof.Status
		switch d.state {
		case stPrepareParamsEOF:
			return d.prepareColumns()
		case stPrepareColumnsEOF:
			return d.finish()
		}
		if d.binary && eof.Status.Has(ServerStatusCursorExists) {
			d.resp.CursorOpened = true
			d.resp.Warnings += uint32(eof.Warnings)
			return d.finish()
		}
		d.state = stRows
		return false, nil
	case stRows:
		if d.isTerminator(p) {
			return d.eofOrOK(p, true)
		}
		if d.binary && p[0] != 0x00 {
			return false, malformed("binary row header 0x%02x, want 0x00", p[0])
		}
		d.resp.Rows++
		return false, nil
	case stLocalInfileEnd, stOK, stAuth:
		switch {
		case p[0] == OKHeader:
			return d.ok(p)
		case d.state == stOK && d.resp.Command == ComSetOption && IsEOF(p):
			return d.eofOrOK(p, false)
		case d.state == stAuth && (p[0] == AuthSwitchHeader || p[0] == AuthMoreDataHeader):
			return false, nil
		}
		return false, malformed("expected OK or ERR in the response to %s, got header 0x%02x", d.resp.Command, p[0])
	case stPrepareFirst:
		if err := d.resp.Prepare.Decode(p, d.caps); err != nil {
			return false, err
		}
		d.resp.Warnings += uint32(d.resp.Prepare.Warnings)
		d.resp.Columns = int(d.resp.Prepare.NumColumns)
		d.resp.Results = 1
		if d.resp.Prepare.MetadataFollows == 0 {
			return d.finish()
		}
		if d.left = int(d.resp.Prepare.NumParams); d.left > 0 {
			d.state = stPrepareParams
			return false, nil
		}
		return d.prepareColumns()
	case stStatistics:
		d.resp.Statistics = string(p)
		return d.finish()
	}
	return false, malformed("response decoder in unknown state %d", d.state)
}

func (d *ResponseDecoder) first(p []byte) (bool, error) {
	switch p[0] {
	case OKHeader:
		return d.ok(p)
	case LocalInfile:
		var req LocalInfileRequest
		if err := req.Decode(p); err != nil {
			return false, err
		}
		d.resp.LocalInfileRequested = true
		d.resp.LocalInfile = req.Filename
		d.state = stLocalInfileEnd
		return false, nil
	}
	n, null, used, err := ReadLenEncInt(p)
	if err != nil || null {
		return false, malformed("expected OK, ERR, LOCAL INFILE or a column count in the response to %s, got header 0x%02x", d.resp.Command, p[0])
	}
	rest := len(p) - used
	metadata := byte(1)
	if d.caps.Has(ClientOptionalResultsetMetadata) || d.caps.Has(MariaDBClientCacheMetadata) {
		if rest != 1 {
			return false, malformed("column count packet needs its metadata_follows byte")
		}
		metadata = p[used]
		rest--
	}
	if rest != 0 {
		return false, malformed("column count packet has %d unexpected trailing bytes", rest)
	}
	if n == 0 || n > MaxColumns {
		return false, malformed("result set of %d columns (at most %d)", n, MaxColumns)
	}
	d.resp.Columns = int(n)
	d.resp.Results++
	if metadata == 0 {
		return d.afterDefinitionsState(stColumnsEOF)
	}
	d.left = int(n)
	d.state = stColumns
	return false, nil
}

// afterDefinitions moves on once the last definition of a group arrived.
func (d *ResponseDecoder) afterDefinitions() (bool, error) {
	switch d.state {
	case stColumns:
		return d.afterDefinitionsState(stColumnsEOF)
	case stPrepareParams:
		if !d.caps.Has(ClientDeprecateEOF) {
			d.state = stPrepareParamsEOF
			return false, nil
		}
		return d.prepareColumns()
	default: // stPrepareColumns
		if !d.caps.Has(ClientDeprecateEOF) {
			d.state = stPrepareColumnsEOF
			return false, nil
		}
		return d.finish()
	}
}

func (d *ResponseDecoder) afterDefinitionsState(eofState respState) (bool, error) {
	if !d.caps.Has(ClientDeprecateEOF) {
		d.state = eofState
	} else {
		d.state = stRows
	}
	return false, nil
}

func (d *ResponseDecoder) prepareColumns() (bool, error) {
	if d.left = int(d.resp.Prepare.NumColumns); d.left > 0 {
		d.state = stPrepareColumns
		return false, nil
	}
	return d.finish()
}

// eofOrOK handles the packet that ends rows or a COM_FIELD_LIST: an EOF, or
// an OK with a 0xfe header under CLIENT_DEPRECATE_EOF.
func (d *ResponseDecoder) eofOrOK(p []byte, endsRows bool) (bool, error) {
	var status StatusFlags
	if d.caps.Has(ClientDeprecateEOF) {
		var ok OKPacket
		if err := ok.Decode(p, d.caps); err != nil {
			return false, err
		}
		status = ok.Status
		d.resp.Warnings += uint32(ok.Warnings)
		if ok.Info != "" {
			d.resp.Info = ok.Info
		}
	} else {
		var eof EOFPacket
		if err := eof.Decode(p, d.caps); err != nil {
			return false, err
		}
		status = eof.Status
		d.resp.Warnings += uint32(eof.Warnings)
	}
	d.resp.Status = status
	if endsRows && d.binary && d.state == stRows && d.resp.Rows == 0 && status.Has(ServerStatusCursorExists) && d.resp.Command == ComStmtExecute {
		d.resp.CursorOpened = true
	}
	return d.next(status)
}

func (d *ResponseDecoder) ok(p []byte) (bool, error) {
	var ok OKPacket
	if err := ok.Decode(p, d.caps); err != nil {
		return false, err
	}
	d.resp.Results++
	d.resp.AffectedRows += ok.AffectedRows
	if ok.LastInsertID != 0 {
		d.resp.LastInsertID = ok.LastInsertID
	}
	d.resp.Warnings += uint32(ok.Warnings)
	d.resp.Status = ok.Status
	d.resp.Info = ok.Info
	if ok.Status.Has(ServerSessionStateChanged) {
		if schema, changed := trackedSchema(ok.SessionState); changed {
			d.resp.Schema, d.resp.SchemaChanged = schema, true
		}
	}
	return d.next(ok.Status)
}

// next ends one result: another follows if SERVER_MORE_RESULTS_EXISTS.
func (d *ResponseDecoder) next(status StatusFlags) (bool, error) {
	if status.Has(ServerMoreResultsExists) && (d.state == stFirst || d.state == stRows || d.state == stLocalInfileEnd) {
		d.state = stFirst
		return false, nil
	}
	return d.finish()
}

func (d *ResponseDecoder) fail(p []byte) (bool, error) {
	var e ErrPacket
	if err := e.Decode(p); err != nil {
		return false, err
	}
	d.resp.Failed = true
	d.resp.ErrorCode = e.Code
	d.resp.SQLState = e.SQLState
	d.resp.ErrorMessage = e.Message
	return d.finish()
}

func (d *ResponseDecoder) finish() (bool, error) {
	d.state = stDone
	return true, nil
}

// sessionTrackSchema is SESSION_TRACK_SCHEMA, the session state change
// that names the new current database.
const sessionTrackSchema = 0x01

// trackedSchema finds the last SESSION_TRACK_SCHEMA in an OK packet's
// session state: a sequence of int<1> type, string<lenenc> data, where the
// schema's data is itself a string<lenenc>. Malformed state is ignored:
// it only informs the audit, the client reads it on its own.
func trackedSchema(state []byte) (schema string, changed bool) {
	for len(state) > 0 {
		typ := state[0]
		data, null, n, err := ReadLenEncString(state[1:])
		if err != nil || null {
			return schema, changed
		}
		state = state[1+n:]
		if typ != sessionTrackSchema {
			continue
		}
		if s, null, _, err := ReadLenEncString(data); err == nil && !null {
			schema, changed = string(s), true
		}
	}
	return schema, changed
}
