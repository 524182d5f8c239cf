package tds

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestReaderReassembles(t *testing.T) {
	payload := AppendSQLBatch(nil, 7, strings.Repeat("select 'é'; ", 300))
	wire := AppendPackets(nil, PacketSQLBatch, payload, 512, 51)
	wire = append(wire, AppendPackets(nil, PacketAttention, nil, 512, 51)...)
	r := NewReader(bytes.NewReader(wire))
	r.MaxPacket = 512
	m, err := r.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != PacketSQLBatch || !bytes.Equal(m.Payload, payload) || m.Packets != (len(payload)+503)/504 {
		t.Fatalf("type %x, %d packets, payload equal %v", m.Type, m.Packets, bytes.Equal(m.Payload, payload))
	}
	if !bytes.Equal(m.Raw, wire[:len(m.Raw)]) {
		t.Fatal("Raw is not the packets as they came")
	}
	m, err = r.ReadMessage()
	if err != nil || m.Type != PacketAttention || len(m.Payload) != 0 {
		t.Fatalf("attention: %v %+v", err, m)
	}
	if _, err := r.ReadMessage(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
	_, text, err := ParseSQLBatch(payload, Version74)
	if err != nil || !strings.HasPrefix(text, "select 'é'; ") {
		t.Fatalf("batch: %v %q", err, text[:20])
	}
}

func TestReaderRefuses(t *testing.T) {
	batch := AppendPackets(nil, PacketSQLBatch, AppendSQLBatch(nil, 0, strings.Repeat("x", 600)), 512, 0)
	mixed := append([]byte(nil), batch...)
	mixed[512] = PacketRPC // the second packet changes type
	cases := []struct {
		name string
		wire []byte
		max  int
		want string
	}{
		{"unknown type", []byte{0x55, 1, 0, 8, 0, 0, 0, 0}, 0, "unknown packet type 0x55"},
		{"pre-TDS7 login", []byte{0x02, 1, 0, 8, 0, 0, 0, 0}, 0, "pre-TDS 7"},
		{"status bits", []byte{0x01, 0x41, 0, 8, 0, 0, 0, 0}, 0, "unknown status bits 0x41"},
		{"window", []byte{0x01, 1, 0, 8, 0, 0, 0, 3}, 0, "window 3"},
		{"length below header", []byte{0x01, 1, 0, 7, 0, 0, 0, 0}, 0, "shorter than its header"},
		{"length over packet size", []byte{0x01, 1, 0x10, 0, 0, 0, 0, 0}, 512, "exceeds the negotiated packet size 512"},
		{"truncated header", []byte{0x01, 1, 0}, 0, "truncated packet header"},
		{"truncated packet", []byte{0x01, 1, 0, 20, 0, 0, 0, 0, 1, 2}, 0, "truncated"},
		{"type change", mixed, 512, "RPC packet inside a SQLBatch message"},
		{"attention without EOM", []byte{0x06, 0, 0, 8, 0, 0, 0, 0}, 0, "Attention packet without EOM"},
	}
	for _, c := range cases {
		r := NewReader(bytes.NewReader(c.wire))
		r.MaxPacket = c.max
		_, err := r.ReadMessage()
		var pe *ProtocolError
		if !errors.As(err, &pe) || !strings.Contains(pe.Reason, c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	r := NewReader(bytes.NewReader(batch))
	r.MaxMessage = 100
	if _, err := r.ReadMessage(); err == nil || !strings.Contains(err.Error(), "exceeds 100 bytes") {
		t.Errorf("message limit: %v", err)
	}
}

func TestPrelogin(t *testing.T) {
	p := &Prelogin{}
	p.Set(PreloginVersion, VersionBytes(16, 0, 4000, 2))
	p.Set(PreloginEncryption, []byte{EncryptOn})
	p.Set(PreloginInstance, []byte("MSSQLSERVER\x00"))
	p.Set(PreloginThreadID, []byte{0, 0, 1, 2})
	p.Set(PreloginMARS, []byte{0})
	p.Set(PreloginTraceID, make([]byte, 36))
	b := p.Append(nil)
	q, err := ParsePrelogin(b)
	if err != nil {
		t.Fatal(err)
	}
	if q.Version != 0x10000FA0 || q.SubBuild != 2 || q.Encryption != EncryptOn || q.Instance != "MSSQLSERVER" || q.ThreadID != 0x0102 || q.MARS {
		t.Fatalf("%+v", q)
	}
	if !reflect.DeepEqual(p.Options, q.Options) {
		t.Fatal("options differ after a round trip")
	}
	bad := func(edit func([]byte) []byte) error {
		c := append([]byte(nil), b...)
		_, err := ParsePrelogin(edit(c))
		return err
	}
	for name, c := range map[string]struct {
		edit func([]byte) []byte
		want string
	}{
		"no terminator":   {func(b []byte) []byte { return []byte{PreloginVersion, 0, 0, 0, 6, PreloginInstance, 0, 0, 0, 0} }, "terminator"},
		"truncated":       {func(b []byte) []byte { return b[:5] }, "runs past"},
		"unknown option":  {func(b []byte) []byte { b[5] = 0x33; return b }, "unknown option 0x33"},
		"version second":  {func(b []byte) []byte { b[0], b[5] = PreloginEncryption, PreloginVersion; return b }, "not VERSION"},
		"past the end":    {func(b []byte) []byte { b[1], b[2] = 0x10, 0; return b }, "runs past"},
		"wrong size":      {func(b []byte) []byte { b[9] = 2; return b }, "has length 2, want 1"},
		"in the table":    {func(b []byte) []byte { b[1], b[2] = 0, 2; return b }, "overlaps the option table"},
		"encryption 0x07": {func(b []byte) []byte { b[binary.BigEndian.Uint16(b[6:])] = 7; return b }, "unknown encryption value"},
	} {
		if err := bad(c.edit); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestLogin7(t *testing.T) {
	l := &Login7{
		TDSVersion: Version74, PacketSize: 8192, ClientProgVer: 7, ClientPID: 42, OptionFlags1: 0xE0, OptionFlags2: 0x03,
		TypeFlags: FlagReadOnlyIntent, ClientTimeZone: -60, ClientLCID: 1033, HostName: "host", UserName: "alice",
		Password: "pässwörd", AppName: "app", ServerName: "sql", CltIntName: "go-mssqldb", Language: "us_english",
		Database: "app", ClientID: [6]byte{1, 2, 3, 4, 5, 6},
		Features: []Feature{{ID: FeatureUTF8Support, Data: []byte{1}}, {ID: FeatureSessionRecovery, Data: []byte{}}},
	}
	b, err := l.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseLogin7(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.OptionFlags3 |= FlagExtension
	if !reflect.DeepEqual(l, got) {
		t.Fatalf("round trip:\n%+v\n%+v", l, got)
	}
	// A long SSPI token uses cbSSPILong.
	l2 := &Login7{TDSVersion: Version74, OptionFlags2: FlagIntSecurity, SSPI: bytes.Repeat([]byte{7}, 70000)}
	b2, _ := l2.Append(nil)
	got2, err := ParseLogin7(b2, 0)
	if err != nil || len(got2.SSPI) != 70000 || !got2.IntegratedSecurity() {
		t.Fatalf("long SSPI: %v %d", err, len(got2.SSPI))
	}
	edit := func(f func([]byte)) error {
		c := append([]byte(nil), b...)
		f(c)
		_, err := ParseLogin7(c, 0)
		return err
	}
	for name, c := range map[string]struct {
		f    func([]byte)
		want string
	}{
		"length field":    {func(b []byte) { b[0]++ }, "length field says"},
		"version":         {func(b []byte) { b[7] = 0x99 }, "unknown TDS version"},
		"TDS 7.0":         {func(b []byte) { binary.LittleEndian.PutUint32(b[4:], 0x70000000) }, "TDS 7.0 is not supported"},
		"packet size":     {func(b []byte) { binary.LittleEndian.PutUint32(b[8:], 100) }, "packet size 100"},
		"offset in fixed": {func(b []byte) { binary.LittleEndian.PutUint16(b[40:], 10) }, "points into the 94-byte fixed part"},
		"past the end":    {func(b []byte) { binary.LittleEndian.PutUint16(b[40:], 0xFFF0) }, "runs past the"},
		"too many chars":  {func(b []byte) { binary.LittleEndian.PutUint16(b[42:], 129) }, "more than the 128 allowed"},
		"feature offset":  {func(b []byte) { binary.LittleEndian.PutUint32(b[binary.LittleEndian.Uint16(b[56:]):], 1) }, "feature extension offset 1"},
		"both SSPI sizes": {func(b []byte) { binary.LittleEndian.PutUint16(b[80:], 1); binary.LittleEndian.PutUint32(b[90:], 1) }, "both cbSSPI"},
	} {
		if err := edit(c.f); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	if _, err := ParseLogin7(b[:50], 0); err == nil {
		t.Error("a truncated LOGIN7 parsed")
	}
}

// typeCase is a parameter given as raw TYPE_INFO and value bytes, with
// its expected type name and rendering.
type typeCase struct {
	raw  []byte
	typ  string
	text string
}

func le(v any) []byte {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, v)
	return b.Bytes()
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var coll = DefaultCollation[:]

var typeCases = []typeCase{
	{[]byte{TypeInt1, 200}, "tinyint", "200"},
	{cat([]byte{TypeInt2}, le(int16(-2))), "smallint", "-2"},
	{cat([]byte{TypeInt4}, le(int32(-70000))), "int", "-70000"},
	{cat([]byte{TypeInt8}, le(int64(math.MinInt64))), "bigint", "-9223372036854775808"},
	{[]byte{TypeBit, 1}, "bit", "1"},
	{[]byte{TypeIntN, 4, 0}, "int", "NULL"},
	{cat([]byte{TypeIntN, 8, 8}, le(int64(12345678901))), "bigint", "12345678901"},
	{[]byte{TypeBitN, 1, 1, 0}, "bit", "0"},
	{cat([]byte{TypeFltN, 8, 8}, le(math.Float64bits(2.5))), "float", "2.5"},
	{cat([]byte{TypeFlt4}, le(math.Float32bits(0.25))), "real", "0.25"},
	{cat([]byte{TypeMoneyN, 8, 8}, le(uint32(0)), le(uint32(123456))), "money", "12.3456"},
	{cat([]byte{TypeMoney4}, le(int32(-15000))), "smallmoney", "-1.5000"},
	{cat([]byte{TypeDecimalN, 17, 38, 4, 5, 0}, le(uint32(1234567))), "decimal(38,4)", "-123.4567"},
	{cat([]byte{TypeNumericN, 5, 9, 0, 5, 1}, le(uint32(42))), "numeric(9,0)", "42"},
	{cat([]byte{TypeDateTimeN, 8, 8}, le(int32(45000)), le(uint32(300*3600+1))), "datetime", "2023-03-17 01:00:00.003"},
	{cat([]byte{TypeDateTime4}, le(uint16(1)), le(uint16(90))), "smalldatetime", "1900-01-02 01:30:00"},
	{[]byte{TypeDateN, 3, 0x5B, 0x95, 0x0A}, "date", "1900-01-01"},
	{cat([]byte{TypeTimeN, 3, 4}, le(uint32(3600123))), "time(3)", "01:00:00.123"},
	{cat([]byte{TypeDateTime2N, 7, 8}, []byte{0, 0, 0, 0, 0}, []byte{0x5B, 0x95, 0x0A}), "datetime2(7)", "1900-01-01 00:00:00.0000000"},
	{cat([]byte{TypeDateTimeOffsetN, 0, 8}, []byte{0x10, 0x0E, 0}, []byte{0x5B, 0x95, 0x0A}, le(int16(-90))), "datetimeoffset(0)", "1899-12-31 23:30:00 -01:30"},
	{cat([]byte{TypeGUID, 16, 16}, []byte{0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF}), "uniqueidentifier", "00112233-4455-6677-8899-aabbccddeeff"},
	{cat([]byte{TypeNVarChar}, le(uint16(8000)), coll, le(uint16(6)), AppendUCS2(nil, "héé")), "nvarchar(4000)", "héé"},
	{cat([]byte{TypeNVarChar}, le(uint16(8000)), coll, le(uint16(0xFFFF))), "nvarchar(4000)", "NULL"},
	{cat([]byte{TypeBigVarChar}, le(uint16(10)), coll, le(uint16(3)), []byte("abc")), "varchar(10)", "abc"},
	{cat([]byte{TypeBigVarChar}, le(uint16(10)), coll, le(uint16(2)), []byte{0xE9, 0x41}), "varchar(10)", "base64:6UE="},
	{cat([]byte{TypeBigChar}, le(uint16(2)), coll, le(uint16(2)), []byte("ab")), "char(2)", "ab"},
	{cat([]byte{TypeBigVarBinary}, le(uint16(100)), le(uint16(3)), []byte{1, 2, 0xFF}), "varbinary(100)", "0x0102ff"},
	{cat([]byte{TypeNVarChar}, le(uint16(0xFFFF)), coll, le(uint64(8)), le(uint32(4)), AppendUCS2(nil, "ab"), le(uint32(4)), AppendUCS2(nil, "cd"), le(uint32(0))), "nvarchar(max)", "abcd"},
	{cat([]byte{TypeBigVarBinary}, le(uint16(0xFFFF)), le(uint64(0xFFFFFFFFFFFFFFFE)), le(uint32(1)), []byte{9}, le(uint32(0))), "varbinary(max)", "0x09"},
	{cat([]byte{TypeBigVarChar}, le(uint16(0xFFFF)), coll, le(uint64(0xFFFFFFFFFFFFFFFF))), "varchar(max)", "NULL"},
	{cat([]byte{TypeXML, 0}, le(uint64(6)), le(uint32(6)), AppendUCS2(nil, "<a>"), le(uint32(0))), "xml", "<a>"},
	{cat([]byte{TypeNText}, le(uint32(0x7FFFFFFF)), coll, le(uint32(4)), AppendUCS2(nil, "hi")), "ntext", "hi"},
	{cat([]byte{TypeImage}, le(uint32(0x7FFFFFFF)), le(uint32(0xFFFFFFFF))), "image", "NULL"},
	{cat([]byte{TypeVariant}, le(uint32(8009)), le(uint32(6)), []byte{TypeInt4, 0}, le(int32(77))), "sql_variant", "77"},
	{cat([]byte{TypeNull}), "null", "NULL"},
}

func TestRPCValues(t *testing.T) {
	var params []ParamValue
	for i, c := range typeCases {
		params = append(params, ParamValue{Name: "@p" + string(rune('a'+i%26)), Raw: c.raw})
	}
	b, err := AppendRPC(nil, 0, Call{ProcName: "dbo.proc", Options: RPCWithRecompile, Params: params},
		Call{ProcID: ProcExecuteSQL, Params: []ParamValue{{Type: NVarChar, Value: "select 1"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, calls, err := ParseRPC(b, Version74, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || calls[0].Name() != "dbo.proc" || calls[0].Options != RPCWithRecompile || calls[1].Name() != "sp_executesql" || calls[1].WellKnown() != ProcExecuteSQL {
		t.Fatalf("calls %+v", calls)
	}
	for i, p := range calls[0].Params {
		c := typeCases[i]
		if p.Type.String() != c.typ || p.Value.Text != c.text {
			t.Errorf("case %d: %s = %q, want %s = %q", i, p.Type.String(), p.Value.Text, c.typ, c.text)
		}
	}
	// Values are cut at the limit and say so.
	long, _ := AppendRPC(nil, 0, Call{ProcID: ProcExecuteSQL, Params: []ParamValue{{Type: NVarMax, Value: strings.Repeat("é", 100)}}})
	_, calls, err = ParseRPC(long, Version74, 11)
	if err != nil || len(calls[0].Params[0].Value.Text) > 11 || !calls[0].Params[0].Value.Truncated {
		t.Fatalf("limit: %v %+v", err, calls[0].Params[0].Value)
	}
	if (&RPCCall{ProcName: "[sys].[sp_prepexec]"}).WellKnown() != ProcPrepExec {
		t.Fatal("sys.sp_prepexec is not recognised")
	}
}

func TestRPCRefuses(t *testing.T) {
	param := func(raw []byte) []byte {
		b, _ := AppendRPC(nil, 0, Call{ProcID: ProcExecuteSQL, Params: []ParamValue{{Name: "@x", Raw: raw}}})
		return b
	}
	for name, c := range map[string]struct {
		b    []byte
		want string
	}{
		"unknown type":        {param([]byte{0x99}), "unknown data type 0x99"},
		"TVP":                 {param([]byte{TypeTVP}), "table-valued parameters"},
		"intn size":           {param([]byte{TypeIntN, 3, 0}), "int with length 3"},
		"value over its type": {param([]byte{TypeIntN, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0}), "int value of 8 bytes"},
		"decimal precision":   {param([]byte{TypeDecimalN, 17, 39, 0, 0}), "precision 39"},
		"scale":               {param([]byte{TypeTimeN, 9, 0}), "scale 9"},
		"odd nvarchar":        {param(cat([]byte{TypeNVarChar}, le(uint16(10)), coll, le(uint16(3)), []byte("abc"))), "odd length 3"},
		"PLP length":          {param(cat([]byte{TypeNVarChar}, le(uint16(0xFFFF)), coll, le(uint64(10)), le(uint32(2)), []byte("ab"), le(uint32(0)))), "announced 10 bytes"},
		"past the end":        {param(cat([]byte{TypeNVarChar}, le(uint16(100)), coll, le(uint16(50)), []byte("ab"))), "runs past the end"},
		"encrypted": {func() []byte {
			b, _ := AppendRPC(nil, 0, Call{ProcID: ProcExecuteSQL, Params: []ParamValue{{Status: ParamEncrypted, Raw: []byte{TypeInt1, 1}}}})
			return b
		}(), "Always Encrypted"},
		"unknown proc id": {func() []byte { b, _ := AppendRPC(nil, 0, Call{ProcID: 99}); return b }(), "procedure id 99"},
		"no call":         {AppendAllHeaders(nil, 0, 1), "no procedure call"},
		"no headers":      {[]byte{1, 0}, "ALL_HEADERS"},
	} {
		if _, _, err := ParseRPC(c.b, Version74, 0); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestTMRequest(t *testing.T) {
	for _, c := range []struct {
		body []byte
		want TMRequest
		err  string
	}{
		{cat(le(TMBeginXact), []byte{2}, appendBVarchar(nil, "t1")), TMRequest{Type: TMBeginXact, Isolation: 2, Name: "t1"}, ""},
		{cat(le(TMCommitXact), appendBVarchar(nil, ""), []byte{1, 4}, appendBVarchar(nil, "next")), TMRequest{Type: TMCommitXact, BeginNew: true, Isolation: 4, NewName: "next"}, ""},
		{cat(le(TMRollbackXact), appendBVarchar(nil, "t1"), []byte{0}), TMRequest{Type: TMRollbackXact, Name: "t1"}, ""},
		{cat(le(TMSaveXact), appendBVarchar(nil, "sp")), TMRequest{Type: TMSaveXact, Name: "sp"}, ""},
		{cat(le(uint16(42))), TMRequest{}, "unknown request type 42"},
		{cat(le(TMBeginXact), []byte{9, 0}), TMRequest{}, "isolation level 9"},
		{cat(le(TMSaveXact), appendBVarchar(nil, "sp"), []byte{0}), TMRequest{}, "1 bytes after"},
	} {
		_, got, err := ParseTMRequest(cat(AppendAllHeaders(nil, 5, 1), c.body), Version74)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%x: %v, want %q", c.body, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%x: %+v %v", c.body, got, err)
		}
	}
}

// serverStream is a server's answer using most token and type shapes.
func serverStream(t testing.TB, rows int) []byte {
	t.Helper()
	var b []byte
	b = AppendEnvChange(b, EnvDatabase, "app", "master")
	b = AppendError(b, TokenInfo, ServerMessage{Number: 5701, State: 2, Text: "Changed database context to 'app'.", Server: "srv"})
	b = AppendEnvChangeBytes(b, EnvCollation, DefaultCollation[:], nil)
	b = AppendLoginAck(b, Version74, "Microsoft SQL Server", 0x10000FA0)
	b = AppendFeatureExtAck(b, []Feature{{ID: FeatureUTF8Support, Data: []byte{1}}})
	// COLMETADATA with an int, an nvarchar(max), a decimal, a datetime2,
	// an ntext with a table name, a sql_variant.
	b = append(b, TokenColMetadata, 6, 0)
	col := func(ti []byte, name string) {
		b = append(b, 0, 0, 0, 0, 1, 0)
		b = append(b, ti...)
		b = appendBVarchar(b, name)
	}
	col([]byte{TypeIntN, 4}, "id")
	col(cat([]byte{TypeNVarChar}, le(uint16(0xFFFF)), coll), "name")
	col([]byte{TypeDecimalN, 9, 18, 2}, "amount")
	col([]byte{TypeDateTime2N, 7}, "at")
	col(cat([]byte{TypeNText}, le(uint32(0x7FFFFFFF)), coll, []byte{2}, appendUSVarchar(nil, "dbo"), appendUSVarchar(nil, "t")), "notes")
	col(cat([]byte{TypeVariant}, le(uint32(8009))), "v")
	for i := 0; i < rows; i++ {
		if i%2 == 0 {
			b = append(b, TokenRow)
			b = append(b, 4)
			b = append(b, le(int32(i))...)
			b = append(b, cat(le(uint64(0xFFFFFFFFFFFFFFFE)), le(uint32(6)), AppendUCS2(nil, "abc"), le(uint32(2)), AppendUCS2(nil, "d"), le(uint32(0)))...)
			b = append(b, 5, 1, 0x10, 0x27, 0, 0)
			b = append(b, 8, 0, 0, 0, 0, 0, 0x5B, 0x95, 0x0A)
			b = append(b, 16)
			b = append(b, bytes.Repeat([]byte{0xAB}, 16)...)
			b = append(b, make([]byte, 8)...)
			b = append(b, le(uint32(4))...)
			b = append(b, AppendUCS2(nil, "hi")...)
			b = append(b, cat(le(uint32(6)), []byte{TypeInt4, 0}, le(int32(5)))...)
		} else {
			// NBCROW: every column but id is NULL.
			b = append(b, TokenNBCRow, 0x3E)
			b = append(b, 4)
			b = append(b, le(int32(i))...)
		}
	}
	b = AppendDone(b, TokenDoneInProc, DoneMore|DoneCount, 0xC1, uint64(rows))
	b = AppendReturnStatus(b, 0)
	var err error
	b, err = AppendReturnValue(b, 0, "@handle", &IntN4, int64(7))
	if err != nil {
		t.Fatal(err)
	}
	b = AppendDone(b, TokenDoneProc, DoneMore, 0xE0, 0)
	b = AppendError(b, TokenError, ServerMessage{Number: 208, State: 1, Class: 16, Text: "Invalid object name 'x'.", Server: "srv", Line: 1})
	b = AppendSSPI(b, []byte{1, 2, 3})
	b = AppendDone(b, TokenDone, DoneError, 0, 0)
	return b
}

type scanned struct {
	kinds []byte
	rows  uint64
	text  []string
}

func scanIn(t testing.TB, b []byte, chunks []int) (scanned, error) {
	var s scanned
	sc := &Scanner{}
	fn := func(tok *Token) error {
		s.kinds = append(s.kinds, tok.Kind)
		s.rows += tok.Rows
		switch tok.Kind {
		case TokenError, TokenInfo:
			s.text = append(s.text, tok.Message)
		case TokenEnvChange:
			s.text = append(s.text, tok.EnvNew)
		case TokenReturnValue:
			s.text = append(s.text, tok.ParamName+"="+tok.Value.Text)
		case TokenLoginAck:
			s.text = append(s.text, tok.ProgName)
		case TokenSSPI:
			s.text = append(s.text, string(tok.Data))
		}
		return nil
	}
	at := 0
	for _, n := range chunks {
		if err := sc.Feed(b[at:at+n], fn); err != nil {
			return s, err
		}
		at += n
	}
	if err := sc.Feed(b[at:], fn); err != nil {
		return s, err
	}
	if sc.Pending() {
		return s, errors.New("pending")
	}
	return s, nil
}

func TestScannerSplits(t *testing.T) {
	b := serverStream(t, 5)
	whole, err := scanIn(t, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{TokenEnvChange, TokenInfo, TokenEnvChange, TokenLoginAck, TokenFeatureExtAck, TokenColMetadata,
		TokenDoneInProc, TokenReturnStatus, TokenReturnValue, TokenDoneProc, TokenError, TokenSSPI, TokenDone}
	if !bytes.Equal(whole.kinds, want) || whole.rows != 5 {
		t.Fatalf("kinds % x rows %d", whole.kinds, whole.rows)
	}
	if !reflect.DeepEqual(whole.text, []string{"app", "Changed database context to 'app'.", "", "Microsoft SQL Server", "@handle=7", "Invalid object name 'x'.", "\x01\x02\x03"}) {
		t.Fatalf("text %q", whole.text)
	}
	// Cut in two at every position, and byte by byte: the same tokens.
	for i := 1; i < len(b); i++ {
		got, err := scanIn(t, b, []int{i})
		if err != nil || !reflect.DeepEqual(got, whole) {
			t.Fatalf("cut at %d: %v %+v", i, err, got)
		}
	}
	ones := make([]int, len(b)-1)
	for i := range ones {
		ones[i] = 1
	}
	if got, err := scanIn(t, b, ones); err != nil || !reflect.DeepEqual(got, whole) {
		t.Fatalf("byte by byte: %v", err)
	}
	sc := &Scanner{}
	if err := sc.ScanAll(b[:len(b)-3], func(*Token) error { return nil }); err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("cut message: %v", err)
	}
	for name, c := range map[string]struct {
		b    []byte
		want string
	}{
		"row first":     {[]byte{TokenRow, 1}, "before any COLMETADATA"},
		"unknown token": {[]byte{0x01}, "unknown token 0x01"},
		"error length":  {cat([]byte{TokenError}, le(uint16(4)), le(uint32(1))), "ERROR: its fields run past its declared length"},
		"envchange":     {cat([]byte{TokenEnvChange}, le(uint16(1)), []byte{99}), "unknown type 99"},
		"compute by":    {[]byte{TokenAltMetadata}, "COMPUTE BY"},
	} {
		if err := (&Scanner{}).ScanAll(c.b, func(*Token) error { return nil }); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestUCS2(t *testing.T) {
	for _, s := range []string{"", "select 1", "héllo", "𝄞 music", "日本語"} {
		if got := DecodeUCS2(AppendUCS2(nil, s)); got != s {
			t.Errorf("%q → %q", s, got)
		}
		if UCS2Len(s)*2 != len(AppendUCS2(nil, s)) {
			t.Errorf("UCS2Len(%q)", s)
		}
	}
	if got := DecodeUCS2([]byte{0x00, 0xD8, 'a', 0}); got != "\uFFFDa" {
		t.Errorf("lone surrogate: %q", got)
	}
}

func TestPasswordScramble(t *testing.T) {
	pw := AppendUCS2(nil, "secret€")
	if got := decodePassword(EncodePassword(pw)); !bytes.Equal(got, pw) {
		t.Fatal("password scrambling does not round trip")
	}
	// The example of MS-TDS 2.2.6.4: 'a' (0x61 0x00) is sent as 0xB3 0xA5.
	if got := EncodePassword([]byte{0x61, 0x00}); !bytes.Equal(got, []byte{0xB3, 0xA5}) {
		t.Fatalf("scrambled 'a' = % x", got)
	}
}
