package tds

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Tokens of the server's token stream (MS-TDS 2.2.7).
const (
	TokenOffset             byte = 0x78
	TokenReturnStatus       byte = 0x79
	TokenColMetadata        byte = 0x81
	TokenAltMetadata        byte = 0x88
	TokenDataClassification byte = 0xA3
	TokenTabName            byte = 0xA4
	TokenColInfo            byte = 0xA5
	TokenOrder              byte = 0xA9
	TokenError              byte = 0xAA
	TokenInfo               byte = 0xAB
	TokenReturnValue        byte = 0xAC
	TokenLoginAck           byte = 0xAD
	TokenFeatureExtAck      byte = 0xAE
	TokenRow                byte = 0xD1
	TokenNBCRow             byte = 0xD2
	TokenAltRow             byte = 0xD3
	TokenEnvChange          byte = 0xE3
	TokenSessionState       byte = 0xE4
	TokenSSPI               byte = 0xED
	TokenFedAuthInfo        byte = 0xEE
	TokenDone               byte = 0xFD
	TokenDoneProc           byte = 0xFE
	TokenDoneInProc         byte = 0xFF
)

// DONE status bits.
const (
	DoneMore     uint16 = 0x0001
	DoneError    uint16 = 0x0002
	DoneInXact   uint16 = 0x0004
	DoneCount    uint16 = 0x0010
	DoneAttn     uint16 = 0x0020
	DoneSrvError uint16 = 0x0100
)

// ENVCHANGE types.
const (
	EnvDatabase         byte = 1
	EnvLanguage         byte = 2
	EnvCharset          byte = 3
	EnvPacketSize       byte = 4
	EnvSortLCID         byte = 5
	EnvSortFlags        byte = 6
	EnvCollation        byte = 7
	EnvBeginTran        byte = 8
	EnvCommitTran       byte = 9
	EnvRollbackTran     byte = 10
	EnvEnlistDTC        byte = 11
	EnvDefectTran       byte = 12
	EnvMirrorPartner    byte = 13
	EnvPromoteTran      byte = 15
	EnvTranMgrAddr      byte = 16
	EnvTranEnded        byte = 17
	EnvResetAck         byte = 18
	EnvUserInstance     byte = 19
	EnvRouting          byte = 20
	columnFlagEncrypted      = 0x0800
)

// TokenName names a token.
func TokenName(t byte) string {
	switch t {
	case TokenOffset:
		return "OFFSET"
	case TokenReturnStatus:
		return "RETURNSTATUS"
	case TokenColMetadata:
		return "COLMETADATA"
	case TokenAltMetadata:
		return "ALTMETADATA"
	case TokenDataClassification:
		return "DATACLASSIFICATION"
	case TokenTabName:
		return "TABNAME"
	case TokenColInfo:
		return "COLINFO"
	case TokenOrder:
		return "ORDER"
	case TokenError:
		return "ERROR"
	case TokenInfo:
		return "INFO"
	case TokenReturnValue:
		return "RETURNVALUE"
	case TokenLoginAck:
		return "LOGINACK"
	case TokenFeatureExtAck:
		return "FEATUREEXTACK"
	case TokenRow:
		return "ROW"
	case TokenNBCRow:
		return "NBCROW"
	case TokenAltRow:
		return "ALTROW"
	case TokenEnvChange:
		return "ENVCHANGE"
	case TokenSessionState:
		return "SESSIONSTATE"
	case TokenSSPI:
		return "SSPI"
	case TokenFedAuthInfo:
		return "FEDAUTHINFO"
	case TokenDone:
		return "DONE"
	case TokenDoneProc:
		return "DONEPROC"
	case TokenDoneInProc:
		return "DONEINPROC"
	}
	return fmt.Sprintf("token 0x%02X", t)
}

// Token is one decoded token of interest. The Scanner reuses it between
// calls; Data is valid only during the callback.
type Token struct {
	Kind byte
	// Start and End locate the token in the data given to Feed when it
	// began inside that data (always the case for ScanAll).
	Start, End int
	// Rows is the number of ROW and NBCROW tokens since the previous
	// token reported.
	Rows uint64

	// DONE, DONEPROC, DONEINPROC.
	Status   uint16
	CurCmd   uint16
	RowCount uint64

	// ERROR and INFO.
	Number     int32
	State      byte
	Class      byte
	Message    string
	ServerName string
	ProcName   string
	LineNumber int32

	// ENVCHANGE: the type and, for text values, the new and old values.
	EnvType byte
	EnvNew  string
	EnvOld  string

	// LOGINACK.
	Interface   byte
	TDSVersion  uint32
	ProgName    string
	ProgVersion uint32

	// RETURNVALUE.
	Ordinal   uint16
	ParamName string
	ValueType TypeInfo
	Value     Value

	// RETURNSTATUS.
	ReturnStatus int32

	// COLMETADATA: the number of columns.
	Columns int

	// SSPI and FEATUREEXTACK: the token's data.
	Data []byte
}

// Scanner decodes a server's token stream fed in pieces (packet payloads
// as they arrive): it keeps the column metadata that rows need, skips rows
// by type without copying them, and reports the other tokens. A token cut
// by a packet boundary is kept until the rest arrives.
type Scanner struct {
	// Version is the session's TDS version (7.4 when 0): DONE row counts
	// and column user types are narrower before 7.2.
	Version uint32
	// MaxValue bounds the rendering of RETURNVALUE values (64 KiB when 0).
	MaxValue int

	cols    []TypeInfo
	pending []byte
	need    int
	rows    uint64
	tok     Token
}

// Reset forgets a token cut short (the stream was interrupted).
func (s *Scanner) Reset() {
	s.pending = s.pending[:0]
	s.need = 0
}

// Pending reports whether a token is cut short, waiting for more data.
func (s *Scanner) Pending() bool { return len(s.pending) > 0 }

// Feed scans p, calling fn for every complete token other than ROW,
// NBCROW, and the metadata-only tokens TABNAME, COLINFO, ORDER and OFFSET.
// An error from fn stops the scan and is returned.
func (s *Scanner) Feed(p []byte, fn func(*Token) error) error {
	data := p
	base := 0
	if len(s.pending) > 0 {
		base = -len(s.pending)
		s.pending = append(s.pending, p...)
		if len(s.pending) < s.need {
			return nil
		}
		data = s.pending
	}
	off := 0
	for off < len(data) {
		n, err := s.token(data[off:], off+base, fn)
		if err != nil {
			var se *shortError
			if errors.As(err, &se) {
				s.need = se.need
				break
			}
			s.pending = s.pending[:0]
			return err
		}
		off += n
	}
	rest := data[off:]
	if len(s.pending) > 0 {
		s.pending = s.pending[:copy(s.pending, rest)]
	} else {
		s.pending = append(s.pending[:0], rest...)
	}
	if len(s.pending) == 0 {
		s.need = 0
	}
	return nil
}

// ScanAll scans a complete message: a token cut short at its end is an
// error.
func (s *Scanner) ScanAll(b []byte, fn func(*Token) error) error {
	s.Reset()
	if err := s.Feed(b, fn); err != nil {
		return err
	}
	if len(s.pending) > 0 {
		tok := s.pending[0]
		s.Reset()
		return fmt.Errorf("%s token cut short by the end of the message", TokenName(tok))
	}
	return nil
}

func (s *Scanner) wide() bool { return s.Version == 0 || s.Version >= Version72 }

// token scans one token at the start of b; start is its offset in the
// data given to Feed. Rows are counted, not reported: the next reported
// token carries their number.
func (s *Scanner) token(b []byte, start int, fn func(*Token) error) (int, error) {
	kind := b[0]
	r := &rd{b: b, off: 1, what: TokenName(kind)}
	t := &s.tok
	var err error
	switch kind {
	case TokenRow, TokenNBCRow:
		if err := s.row(r, kind); err != nil {
			return 0, err
		}
		s.rows++
		return r.off, nil
	case TokenColMetadata:
		err = s.colMetadata(r, t)
	case TokenDone, TokenDoneProc, TokenDoneInProc:
		err = s.done(r, t, kind)
	case TokenError, TokenInfo:
		err = s.message(r, t, kind)
	case TokenEnvChange:
		var body []byte
		if body, err = lenPrefixed16(r); err == nil {
			*t = Token{Kind: kind}
			err = parseEnvChange(body, t)
		}
	case TokenLoginAck:
		err = loginAck(r, t)
	case TokenReturnValue:
		err = s.returnValue(r, t)
	case TokenReturnStatus:
		v := r.u32("status")
		if err = r.err; err == nil {
			*t = Token{Kind: kind, ReturnStatus: int32(v)}
		}
	case TokenSSPI:
		var body []byte
		if body, err = lenPrefixed16(r); err == nil {
			*t = Token{Kind: kind, Data: body}
		}
	case TokenFeatureExtAck:
		err = featureExtAck(r, t)
	case TokenSessionState, TokenFedAuthInfo:
		n := r.u32("length")
		r.bytes("data", int(n))
		if err = r.err; err == nil {
			*t = Token{Kind: kind}
		}
	// Tokens of no interest to the audit are skipped unreported.
	case TokenTabName, TokenColInfo, TokenOrder:
		if _, err := lenPrefixed16(r); err != nil {
			return 0, err
		}
		return r.off, nil
	case TokenOffset:
		r.bytes("offset", 4)
		if r.err != nil {
			return 0, r.err
		}
		return r.off, nil
	case TokenAltMetadata, TokenAltRow:
		return 0, fmt.Errorf("%s (COMPUTE BY results) is not supported", TokenName(kind))
	case TokenDataClassification:
		return 0, fmt.Errorf("DATACLASSIFICATION was not negotiated")
	default:
		return 0, fmt.Errorf("unknown token 0x%02X", kind)
	}
	if err != nil {
		return 0, err
	}
	t.Start, t.End = start, start+r.off
	t.Rows, s.rows = s.rows, 0
	if err := fn(t); err != nil {
		return 0, err
	}
	return r.off, nil
}

// row skips a ROW or NBCROW (whose null bitmap says which columns are
// absent) by the current COLMETADATA.
func (s *Scanner) row(r *rd, kind byte) error {
	if s.cols == nil {
		return fmt.Errorf("%s before any COLMETADATA", TokenName(kind))
	}
	var bitmap []byte
	if kind == TokenNBCRow {
		bitmap = r.bytes("null bitmap", (len(s.cols)+7)/8)
		if r.err != nil {
			return r.err
		}
	}
	for i := range s.cols {
		if bitmap != nil && bitmap[i/8]&(1<<(i%8)) != 0 {
			continue
		}
		skipValue(r, &s.cols[i], true)
		if r.err != nil {
			return colErr(r.err, i)
		}
	}
	return nil
}

// colMetadata reads COLMETADATA into the scanner's columns.
func (s *Scanner) colMetadata(r *rd, t *Token) error {
	n := int(r.u16("column count"))
	if r.err != nil {
		return r.err
	}
	// A count of 0xFFFF (NoMetaData) keeps the previous metadata.
	if n != 0xFFFF {
		cols := make([]TypeInfo, 0, n)
		for i := 0; i < n; i++ {
			if s.wide() {
				r.u32("user type")
			} else {
				r.u16("user type")
			}
			flags := r.u16("column flags")
			if r.err == nil && flags&columnFlagEncrypted != 0 {
				return fmt.Errorf("COLMETADATA: column %d is encrypted (Always Encrypted is not supported)", i+1)
			}
			ti := readTypeInfo(r, true)
			r.bvarchar("column name")
			if r.err != nil {
				return colErr(r.err, i)
			}
			cols = append(cols, ti)
		}
		s.cols = cols
	}
	*t = Token{Kind: TokenColMetadata, Columns: len(s.cols)}
	return nil
}

// done reads DONE, DONEPROC and DONEINPROC.
func (s *Scanner) done(r *rd, t *Token, kind byte) error {
	status := r.u16("status")
	cmd := r.u16("current command")
	var count uint64
	if s.wide() {
		count = r.u64("row count")
	} else {
		count = uint64(r.u32("row count"))
	}
	if r.err != nil {
		return r.err
	}
	*t = Token{Kind: kind, Status: status, CurCmd: cmd, RowCount: count}
	return nil
}

// message reads ERROR and INFO.
func (s *Scanner) message(r *rd, t *Token, kind byte) error {
	body, err := lenPrefixed16(r)
	if err != nil {
		return err
	}
	br := &rd{b: body, what: TokenName(kind)}
	*t = Token{Kind: kind}
	t.Number = int32(br.u32("number"))
	t.State = br.u8("state")
	t.Class = br.u8("class")
	t.Message = br.usvarchar("message")
	t.ServerName = br.bvarchar("server name")
	t.ProcName = br.bvarchar("procedure name")
	if s.wide() {
		t.LineNumber = int32(br.u32("line number"))
	} else {
		t.LineNumber = int32(br.u16("line number"))
	}
	return exact(br)
}

// loginAck reads LOGINACK.
func loginAck(r *rd, t *Token) error {
	body, err := lenPrefixed16(r)
	if err != nil {
		return err
	}
	br := &rd{b: body, what: "LOGINACK"}
	*t = Token{Kind: TokenLoginAck}
	t.Interface = br.u8("interface")
	if v := br.bytes("TDS version", 4); br.err == nil {
		t.TDSVersion = binary.BigEndian.Uint32(v)
	}
	t.ProgName = br.bvarchar("program name")
	if v := br.bytes("program version", 4); br.err == nil {
		t.ProgVersion = binary.BigEndian.Uint32(v)
	}
	return exact(br)
}

// returnValue reads RETURNVALUE, its value kept up to MaxValue.
func (s *Scanner) returnValue(r *rd, t *Token) error {
	ord := r.u16("parameter ordinal")
	name := r.bvarchar("parameter name")
	status := r.u8("status")
	if s.wide() {
		r.u32("user type")
	} else {
		r.u16("user type")
	}
	flags := r.u16("flags")
	if r.err != nil {
		return r.err
	}
	if flags&columnFlagEncrypted != 0 {
		return fmt.Errorf("RETURNVALUE: parameter %q is encrypted (Always Encrypted is not supported)", name)
	}
	if status != 0x01 && status != 0x02 {
		return fmt.Errorf("RETURNVALUE: unknown status 0x%02X", status)
	}
	ti := readTypeInfo(r, false)
	limit := s.MaxValue
	if limit == 0 {
		limit = 64 << 10
	}
	v := readValue(r, &ti, limit)
	if r.err != nil {
		return r.err
	}
	*t = Token{Kind: TokenReturnValue, Ordinal: ord, ParamName: name, ValueType: ti, Value: v}
	return nil
}

// featureExtAck reads FEATUREEXTACK up to its terminator; its data is
// kept whole.
func featureExtAck(r *rd, t *Token) error {
	st := r.off
	for {
		id := r.u8("feature id")
		if r.err != nil {
			return r.err
		}
		if id == featureTerminator {
			break
		}
		n := r.u32("feature data length")
		r.bytes("feature data", int(n))
		if r.err != nil {
			return r.err
		}
	}
	*t = Token{Kind: TokenFeatureExtAck, Data: r.b[st:r.off]}
	return nil
}

func colErr(err error, i int) error {
	var se *shortError
	if errors.As(err, &se) {
		return err
	}
	return fmt.Errorf("column %d: %w", i+1, err)
}

// lenPrefixed16 reads a token body with a 16-bit length.
func lenPrefixed16(r *rd) ([]byte, error) {
	n := int(r.u16("length"))
	b := r.bytes("body", n)
	return b, r.err
}

func exact(r *rd) error {
	if r.err != nil {
		var se *shortError
		if errors.As(r.err, &se) {
			// Inside a length-prefixed token the data is all there:
			// running short means the token's length lies.
			return fmt.Errorf("%s: its fields run past its declared length", r.what)
		}
		return fmt.Errorf("%s: %w", r.what, r.err)
	}
	if r.left() != 0 {
		return fmt.Errorf("%s: %d bytes after its fields", r.what, r.left())
	}
	return nil
}

func parseEnvChange(b []byte, t *Token) error {
	r := &rd{b: b, what: "ENVCHANGE"}
	t.EnvType = r.u8("type")
	switch t.EnvType {
	case EnvDatabase, EnvLanguage, EnvCharset, EnvPacketSize, EnvSortLCID, EnvSortFlags, EnvMirrorPartner, EnvUserInstance:
		t.EnvNew = r.bvarchar("new value")
		t.EnvOld = r.bvarchar("old value")
	case EnvCollation, EnvBeginTran, EnvCommitTran, EnvRollbackTran, EnvEnlistDTC, EnvDefectTran, EnvTranMgrAddr, EnvTranEnded, EnvResetAck:
		n := int(r.u8("new value length"))
		r.bytes("new value", n)
		n = int(r.u8("old value length"))
		r.bytes("old value", n)
	case EnvPromoteTran:
		n := int(r.u32("new value length"))
		r.bytes("new value", n)
		r.u8("old value length")
	case EnvRouting:
		n := int(r.u16("routing data length"))
		r.bytes("routing data", n)
		r.u16("old value length")
	default:
		return fmt.Errorf("ENVCHANGE: unknown type %d", t.EnvType)
	}
	return exact(r)
}

// ServerMessage is an ERROR or INFO token's content.
type ServerMessage struct {
	Number int32
	State  byte
	Class  byte
	Text   string
	Server string
	Proc   string
	Line   int32
}

// AppendError appends an ERROR (or, with kind TokenInfo, INFO) token.
func AppendError(dst []byte, kind byte, m ServerMessage) []byte {
	start := len(dst)
	dst = append(dst, kind, 0, 0)
	dst = appendU32(dst, uint32(m.Number))
	dst = append(dst, m.State, m.Class)
	dst = appendUSVarchar(dst, m.Text)
	dst = appendBVarchar(dst, m.Server)
	dst = appendBVarchar(dst, m.Proc)
	dst = appendU32(dst, uint32(m.Line))
	le16(dst[start+1:], uint16(len(dst)-start-3))
	return dst
}

// AppendDone appends a DONE, DONEPROC or DONEINPROC token (TDS 7.2+).
func AppendDone(dst []byte, kind byte, status, curCmd uint16, rows uint64) []byte {
	dst = append(dst, kind)
	dst = appendU16(dst, status)
	dst = appendU16(dst, curCmd)
	return appendU64(dst, rows)
}

// AppendLoginAck appends a LOGINACK token.
func AppendLoginAck(dst []byte, tdsVersion uint32, progName string, progVersion uint32) []byte {
	start := len(dst)
	dst = append(dst, TokenLoginAck, 0, 0, 1)
	dst = binary.BigEndian.AppendUint32(dst, tdsVersion)
	dst = appendBVarchar(dst, progName)
	dst = binary.BigEndian.AppendUint32(dst, progVersion)
	le16(dst[start+1:], uint16(len(dst)-start-3))
	return dst
}

// AppendEnvChange appends an ENVCHANGE of a text type (database,
// language, packet size...).
func AppendEnvChange(dst []byte, typ byte, newValue, oldValue string) []byte {
	start := len(dst)
	dst = append(dst, TokenEnvChange, 0, 0, typ)
	dst = appendBVarchar(dst, newValue)
	dst = appendBVarchar(dst, oldValue)
	le16(dst[start+1:], uint16(len(dst)-start-3))
	return dst
}

// AppendEnvChangeBytes appends an ENVCHANGE of a binary type (collation,
// transaction descriptors).
func AppendEnvChangeBytes(dst []byte, typ byte, newValue, oldValue []byte) []byte {
	start := len(dst)
	dst = append(dst, TokenEnvChange, 0, 0, typ, byte(len(newValue)))
	dst = append(dst, newValue...)
	dst = append(dst, byte(len(oldValue)))
	dst = append(dst, oldValue...)
	le16(dst[start+1:], uint16(len(dst)-start-3))
	return dst
}

// AppendSSPI appends an SSPI token.
func AppendSSPI(dst []byte, data []byte) []byte {
	dst = append(dst, TokenSSPI)
	dst = appendU16(dst, uint16(len(data)))
	return append(dst, data...)
}

// AppendReturnStatus appends a RETURNSTATUS token.
func AppendReturnStatus(dst []byte, status int32) []byte {
	dst = append(dst, TokenReturnStatus)
	return appendU32(dst, uint32(status))
}

// Column is a result column for AppendColMetadata.
type Column struct {
	Name string
	Type TypeInfo
	// Flags are the column flags (nullable 0x01 is usual).
	Flags uint16
}

// AppendColMetadata appends COLMETADATA (TDS 7.2+).
func AppendColMetadata(dst []byte, cols []Column) []byte {
	dst = append(dst, TokenColMetadata)
	dst = appendU16(dst, uint16(len(cols)))
	for _, c := range cols {
		dst = appendU32(dst, 0)
		dst = appendU16(dst, c.Flags)
		dst = AppendTypeInfo(dst, &c.Type)
		dst = appendBVarchar(dst, c.Name)
	}
	return dst
}

// AppendReturnValue appends a RETURNVALUE token for an output parameter.
func AppendReturnValue(dst []byte, ordinal uint16, name string, t *TypeInfo, v any) ([]byte, error) {
	dst = append(dst, TokenReturnValue)
	dst = appendU16(dst, ordinal)
	dst = appendBVarchar(dst, name)
	dst = append(dst, 0x01)
	dst = appendU32(dst, 0)
	dst = appendU16(dst, 0x01)
	dst = AppendTypeInfo(dst, t)
	return AppendValue(dst, t, v)
}

// AppendFeatureExtAck appends FEATUREEXTACK with the given features.
func AppendFeatureExtAck(dst []byte, fs []Feature) []byte {
	dst = append(dst, TokenFeatureExtAck)
	for _, f := range fs {
		dst = append(dst, f.ID)
		dst = appendU32(dst, uint32(len(f.Data)))
		dst = append(dst, f.Data...)
	}
	return append(dst, featureTerminator)
}
