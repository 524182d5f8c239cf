package tds

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// ALL_HEADERS header types.
const (
	HeaderQueryNotifications    uint16 = 1
	HeaderTransactionDescriptor uint16 = 2
	HeaderTraceActivity         uint16 = 3
)

// AllHeaders is the ALL_HEADERS prefix of SQLBatch, RPC and transaction
// manager requests (TDS 7.2 and later).
type AllHeaders struct {
	TransactionDescriptor uint64
	OutstandingRequests   uint32
	HasTransaction        bool
	QueryNotification     bool
	TraceActivity         bool
}

// ParseAllHeaders reads ALL_HEADERS and returns the rest of the payload.
// Before TDS 7.2 there is none.
func ParseAllHeaders(b []byte, tdsVersion uint32) (AllHeaders, []byte, error) {
	var h AllHeaders
	if tdsVersion != 0 && tdsVersion < Version72 {
		return h, b, nil
	}
	if len(b) < 4 {
		return h, nil, fmt.Errorf("ALL_HEADERS: %d bytes, too short for its length", len(b))
	}
	total := int(binary.LittleEndian.Uint32(b))
	if total < 4 || total > len(b) {
		return h, nil, fmt.Errorf("ALL_HEADERS: total length %d is outside 4..%d", total, len(b))
	}
	rest := b[total:]
	hs := b[4:total]
	for len(hs) > 0 {
		if len(hs) < 6 {
			return h, nil, fmt.Errorf("ALL_HEADERS: truncated header (%d bytes left)", len(hs))
		}
		n := int(binary.LittleEndian.Uint32(hs))
		typ := binary.LittleEndian.Uint16(hs[4:])
		if n < 6 || n > len(hs) {
			return h, nil, fmt.Errorf("ALL_HEADERS: header of type %d has length %d, outside 6..%d", typ, n, len(hs))
		}
		data := hs[6:n]
		switch typ {
		case HeaderTransactionDescriptor:
			if len(data) != 12 {
				return h, nil, fmt.Errorf("ALL_HEADERS: transaction descriptor header has %d data bytes, want 12", len(data))
			}
			h.TransactionDescriptor = binary.LittleEndian.Uint64(data)
			h.OutstandingRequests = binary.LittleEndian.Uint32(data[8:])
			h.HasTransaction = true
		case HeaderQueryNotifications:
			r := &rd{b: data, what: "query notifications header"}
			id := int(r.u16("notify id length"))
			r.bytes("notify id", id)
			ssb := int(r.u16("SSB deployment length"))
			r.bytes("SSB deployment", ssb)
			if r.left() == 4 {
				r.u32("timeout")
			}
			if r.err != nil {
				return h, nil, fmt.Errorf("ALL_HEADERS: %v", r.err)
			}
			if r.left() != 0 {
				return h, nil, fmt.Errorf("ALL_HEADERS: query notifications header has %d extra bytes", r.left())
			}
			h.QueryNotification = true
		case HeaderTraceActivity:
			if len(data) != 20 {
				return h, nil, fmt.Errorf("ALL_HEADERS: trace activity header has %d data bytes, want 20", len(data))
			}
			h.TraceActivity = true
		default:
			return h, nil, fmt.Errorf("ALL_HEADERS: unknown header type %d", typ)
		}
		hs = hs[n:]
	}
	if !h.HasTransaction {
		return h, nil, fmt.Errorf("ALL_HEADERS: no transaction descriptor header (required since TDS 7.2)")
	}
	return h, rest, nil
}

// AppendAllHeaders appends ALL_HEADERS with a transaction descriptor.
func AppendAllHeaders(dst []byte, txn uint64, outstanding uint32) []byte {
	dst = appendU32(dst, 22)
	dst = appendU32(dst, 18)
	dst = appendU16(dst, HeaderTransactionDescriptor)
	dst = appendU64(dst, txn)
	return appendU32(dst, outstanding)
}

// ParseSQLBatch returns the text of a SQLBatch payload.
func ParseSQLBatch(b []byte, tdsVersion uint32) (AllHeaders, string, error) {
	h, rest, err := ParseAllHeaders(b, tdsVersion)
	if err != nil {
		return h, "", fmt.Errorf("SQLBatch: %w", err)
	}
	if len(rest)%2 != 0 {
		return h, "", fmt.Errorf("SQLBatch: text of odd length %d is not UCS-2", len(rest))
	}
	return h, DecodeUCS2(rest), nil
}

// Well-known procedure ids of RPC requests (MS-TDS 2.2.6.6).
const (
	ProcCursor          uint16 = 1
	ProcCursorOpen      uint16 = 2
	ProcCursorPrepare   uint16 = 3
	ProcCursorExecute   uint16 = 4
	ProcCursorPrepExec  uint16 = 5
	ProcCursorUnprepare uint16 = 6
	ProcCursorFetch     uint16 = 7
	ProcCursorOption    uint16 = 8
	ProcCursorClose     uint16 = 9
	ProcExecuteSQL      uint16 = 10
	ProcPrepare         uint16 = 11
	ProcExecute         uint16 = 12
	ProcPrepExec        uint16 = 13
	ProcPrepExecRPC     uint16 = 14
	ProcUnprepare       uint16 = 15
)

var procNames = [...]string{
	ProcCursor: "sp_cursor", ProcCursorOpen: "sp_cursoropen", ProcCursorPrepare: "sp_cursorprepare",
	ProcCursorExecute: "sp_cursorexecute", ProcCursorPrepExec: "sp_cursorprepexec", ProcCursorUnprepare: "sp_cursorunprepare",
	ProcCursorFetch: "sp_cursorfetch", ProcCursorOption: "sp_cursoroption", ProcCursorClose: "sp_cursorclose",
	ProcExecuteSQL: "sp_executesql", ProcPrepare: "sp_prepare", ProcExecute: "sp_execute", ProcPrepExec: "sp_prepexec",
	ProcPrepExecRPC: "sp_prepexecrpc", ProcUnprepare: "sp_unprepare",
}

// ProcName names a well-known procedure id.
func ProcName(id uint16) string {
	if int(id) < len(procNames) && procNames[id] != "" {
		return procNames[id]
	}
	return fmt.Sprintf("procedure id %d", id)
}

// RPC parameter status flags.
const (
	ParamByRef     byte = 0x01
	ParamDefault   byte = 0x02
	ParamEncrypted byte = 0x08
)

// RPC option flags.
const (
	RPCWithRecompile  uint16 = 0x01
	RPCNoMetaData     uint16 = 0x02
	RPCReuseMetaData  uint16 = 0x04
	rpcKnownOptions          = RPCWithRecompile | RPCNoMetaData | RPCReuseMetaData
	rpcBatchFlag      byte   = 0xFF
	rpcNoExecFlag     byte   = 0xFE
	rpcBatchFlag71    byte   = 0x80
	maxParamNameChars        = 128
)

// Param is one RPC parameter, its value rendered as text.
type Param struct {
	Name   string
	Status byte
	Type   TypeInfo
	Value  Value
}

// Output reports whether the parameter is passed by reference (OUTPUT).
func (p *Param) Output() bool { return p.Status&ParamByRef != 0 }

// RPCCall is one procedure call of an RPC request.
type RPCCall struct {
	// ProcName is set when the call names its procedure, ProcID when it
	// uses a well-known id.
	ProcName string
	ProcID   uint16
	Options  uint16
	Params   []Param
	// NoExec is set when the call was separated from the previous one by
	// NoExecFlag.
	NoExec bool
}

// Name is the procedure's name, for well-known ids too.
func (c *RPCCall) Name() string {
	if c.ProcName != "" {
		return c.ProcName
	}
	return ProcName(c.ProcID)
}

// WellKnown returns the well-known id a call uses, by id or by its name
// (sp_executesql, sys.sp_executesql, [sp_prepexec]...), or 0.
func (c *RPCCall) WellKnown() uint16 {
	if c.ProcID != 0 {
		return c.ProcID
	}
	n := strings.ToLower(c.ProcName)
	n = strings.NewReplacer("[", "", "]", "").Replace(n)
	if i := strings.LastIndexByte(n, '.'); i >= 0 {
		n = n[i+1:]
	}
	for id, name := range procNames {
		if name != "" && name == n {
			return uint16(id)
		}
	}
	return 0
}

// ParseRPC decodes an RPC request: every call with its parameters, values
// rendered and cut at limit bytes each (0: no limit).
func ParseRPC(b []byte, tdsVersion uint32, limit int) (AllHeaders, []RPCCall, error) {
	h, rest, err := ParseAllHeaders(b, tdsVersion)
	if err != nil {
		return h, nil, fmt.Errorf("RPC: %w", err)
	}
	r := &rd{b: rest, what: "RPC"}
	batch := rpcBatchFlag
	if tdsVersion != 0 && tdsVersion < Version72 {
		batch = rpcBatchFlag71
	}
	calls := make([]RPCCall, 0, 1)
	noExec := false
	for {
		if r.left() == 0 {
			if len(calls) == 0 {
				return h, nil, fmt.Errorf("RPC: the request holds no procedure call")
			}
			return h, calls, nil
		}
		c, err := parseCall(r, batch, limit)
		if err != nil {
			return h, nil, fmt.Errorf("RPC call %d: %w", len(calls)+1, err)
		}
		c.NoExec = noExec
		calls = append(calls, c)
		if r.left() == 0 {
			return h, calls, nil
		}
		switch f := r.u8("batch flag"); f {
		case batch:
			noExec = false
		case rpcNoExecFlag:
			noExec = true
		default:
			return h, nil, fmt.Errorf("RPC call %d: byte 0x%02X where a batch flag or parameter was expected", len(calls), f)
		}
	}
}

func parseCall(r *rd, batch byte, limit int) (RPCCall, error) {
	var c RPCCall
	n := r.u16("procedure name length")
	if r.err != nil {
		return c, r.err
	}
	if n == 0xFFFF {
		c.ProcID = r.u16("procedure id")
		if r.err == nil && (c.ProcID == 0 || int(c.ProcID) >= len(procNames)) {
			return c, fmt.Errorf("unknown well-known procedure id %d", c.ProcID)
		}
	} else {
		if n == 0 {
			return c, fmt.Errorf("empty procedure name")
		}
		if n > 1046 {
			return c, fmt.Errorf("procedure name of %d characters", n)
		}
		c.ProcName = DecodeUCS2(r.bytes("procedure name", 2*int(n)))
	}
	c.Params = make([]Param, 0, 4)
	c.Options = r.u16("option flags")
	if r.err != nil {
		return c, r.err
	}
	if c.Options&^rpcKnownOptions != 0 {
		return c, fmt.Errorf("unknown option flags 0x%04X", c.Options)
	}
	for r.left() > 0 {
		nb := r.b[r.off]
		if nb == batch || nb == rpcNoExecFlag {
			break
		}
		if int(nb) > maxParamNameChars {
			return c, fmt.Errorf("parameter %d: name of %d characters", len(c.Params)+1, nb)
		}
		var p Param
		p.Name = r.bvarchar("parameter name")
		p.Status = r.u8("parameter status")
		if r.err != nil {
			return c, r.err
		}
		if p.Status&ParamEncrypted != 0 {
			return c, fmt.Errorf("parameter %q is encrypted (Always Encrypted is not supported)", p.Name)
		}
		if p.Status&^(ParamByRef|ParamDefault) != 0 {
			return c, fmt.Errorf("parameter %q has unknown status flags 0x%02X", p.Name, p.Status)
		}
		p.Type = readTypeInfo(r, false)
		if r.err != nil {
			return c, fmt.Errorf("parameter %d (%q): %w", len(c.Params)+1, p.Name, r.err)
		}
		p.Value = readValue(r, &p.Type, limit)
		if r.err != nil {
			return c, fmt.Errorf("parameter %d (%q): %w", len(c.Params)+1, p.Name, r.err)
		}
		c.Params = append(c.Params, p)
	}
	return c, nil
}

// Transaction manager request types.
const (
	TMGetDTCAddress uint16 = 0
	TMPropagateXact uint16 = 1
	TMBeginXact     uint16 = 5
	TMPromoteXact   uint16 = 6
	TMCommitXact    uint16 = 7
	TMRollbackXact  uint16 = 8
	TMSaveXact      uint16 = 9
)

// TMRequest is a transaction manager request.
type TMRequest struct {
	Type uint16
	// Name is the transaction or savepoint name.
	Name string
	// Isolation is the isolation level of a BEGIN (or of the transaction
	// a COMMIT or ROLLBACK begins).
	Isolation byte
	// BeginNew is set when a COMMIT or ROLLBACK begins a new transaction,
	// named NewName.
	BeginNew bool
	NewName  string
}

// TMRequestName names a request type.
func TMRequestName(t uint16) string {
	switch t {
	case TMGetDTCAddress:
		return "TM_GET_DTC_ADDRESS"
	case TMPropagateXact:
		return "TM_PROPAGATE_XACT"
	case TMBeginXact:
		return "TM_BEGIN_XACT"
	case TMPromoteXact:
		return "TM_PROMOTE_XACT"
	case TMCommitXact:
		return "TM_COMMIT_XACT"
	case TMRollbackXact:
		return "TM_ROLLBACK_XACT"
	case TMSaveXact:
		return "TM_SAVE_XACT"
	}
	return fmt.Sprintf("TM request %d", t)
}

// IsolationName names a TM isolation level.
func IsolationName(l byte) string {
	switch l {
	case 0:
		return ""
	case 1:
		return "READ UNCOMMITTED"
	case 2:
		return "READ COMMITTED"
	case 3:
		return "REPEATABLE READ"
	case 4:
		return "SERIALIZABLE"
	case 5:
		return "SNAPSHOT"
	}
	return fmt.Sprintf("isolation %d", l)
}

// ParseTMRequest decodes a transaction manager request.
func ParseTMRequest(b []byte, tdsVersion uint32) (AllHeaders, TMRequest, error) {
	h, rest, err := ParseAllHeaders(b, tdsVersion)
	if err != nil {
		return h, TMRequest{}, fmt.Errorf("transaction manager request: %w", err)
	}
	r := &rd{b: rest, what: "transaction manager request"}
	t := TMRequest{Type: r.u16("request type")}
	switch t.Type {
	case TMGetDTCAddress, TMPropagateXact:
		n := int(r.u16("payload length"))
		r.bytes("payload", n)
	case TMBeginXact:
		t.Isolation = r.u8("isolation level")
		t.Name = r.bvarchar("transaction name")
	case TMPromoteXact:
	case TMCommitXact, TMRollbackXact:
		t.Name = r.bvarchar("transaction name")
		flags := r.u8("flags")
		if r.err == nil && flags&^1 != 0 {
			r.fail("unknown flags 0x%02X", flags)
		}
		if flags&1 != 0 {
			t.BeginNew = true
			t.Isolation = r.u8("isolation level")
			t.NewName = r.bvarchar("new transaction name")
		}
	case TMSaveXact:
		t.Name = r.bvarchar("savepoint name")
	default:
		r.fail("unknown request type %d", t.Type)
	}
	if r.err == nil && t.Isolation > 5 {
		r.fail("unknown isolation level %d", t.Isolation)
	}
	if r.err != nil {
		return h, t, fmt.Errorf("transaction manager request: %w", r.err)
	}
	if r.left() != 0 {
		return h, t, fmt.Errorf("transaction manager request: %d bytes after %s", r.left(), TMRequestName(t.Type))
	}
	return h, t, nil
}
