package wire

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestCommandsRoundTrip(t *testing.T) {
	caps := allCaps41
	stmts := NewStatements()
	stmts.Prepared(&StmtPrepareOK{StatementID: 1, NumParams: 3})
	stmts.Prepared(&StmtPrepareOK{StatementID: 2, NumParams: 0, NumColumns: 1})
	for _, cmd := range []Command{
		&Quit{}, &Ping{}, &Statistics{}, &ProcessInfo{}, &ResetConnection{},
		&InitDB{Schema: "shop"}, &CreateDB{Schema: "a"}, &DropDB{Schema: "b"},
		&Query{Query: "SELECT 1"},
		&FieldList{Table: "t", Wildcard: "c%"},
		&ProcessKill{ConnectionID: 77},
		&ChangeUser{User: "u", AuthResponse: []byte("0123456789abcdefghij"), Schema: "db", CharacterSet: 45,
			AuthPlugin: PluginNativePassword, Attributes: []Attribute{{"k", "v"}}},
		&StmtPrepare{Query: "SELECT ? + ?"},
		&StmtExecute{StatementID: 1, Flags: CursorTypeReadOnly, IterationCount: 1, NewParamsBound: true, Params: []Param{
			{ParamType: ParamType{Type: TypeLongLong, Unsigned: true}, Value: Value{Text: "42"}},
			{ParamType: ParamType{Type: TypeVarString}, Value: Value{Null: true}},
			{ParamType: ParamType{Type: TypeTime}, Value: Value{Text: "-00:00:00"}}}},
		&StmtExecute{StatementID: 2, IterationCount: 1},
		&StmtSendLongData{StatementID: 1, ParamID: 2, Data: []byte("chunk")},
		&StmtClose{StatementID: 1}, &StmtReset{StatementID: 1},
		&SetOption{Option: OptionMultiStatementsOff},
		&StmtFetch{StatementID: 1, NumRows: 100},
		&RawCommand{Cmd: ComBinlogDump, Body: []byte{1, 2, 3}},
	} {
		enc, err := cmd.Encode(nil, caps)
		if err != nil {
			t.Fatalf("%s: %v", cmd.Type(), err)
		}
		if enc[0] != byte(cmd.Type()) {
			t.Errorf("%s: first byte 0x%02x", cmd.Type(), enc[0])
		}
		got, err := DecodeCommand(enc, caps, stmts)
		if err != nil {
			t.Fatalf("%s: %v", cmd.Type(), err)
		}
		if !reflect.DeepEqual(got, cmd) {
			t.Errorf("%s round trip:\n got %+v\nwant %+v", cmd.Type(), got, cmd)
		}
	}
	for _, bad := range [][]byte{nil, {byte(ComPing), 0}, {byte(ComProcessKill), 1, 2}, {byte(ComStmtClose), 1, 0, 0, 0, 9},
		{byte(ComFieldList), 't'}, {byte(ComStmtExecute), 1, 0, 0, 0, 0, 1, 0, 0}} {
		if _, err := DecodeCommand(bad, caps, stmts); !errors.Is(err, ErrMalformed) {
			t.Errorf("% x: %v, want ErrMalformed", bad, err)
		}
	}
}

func TestQueryAttributes(t *testing.T) {
	caps := allCaps41 | ClientQueryAttributes
	q := &Query{Query: "SELECT 1", Attributes: []Param{
		{ParamType: ParamType{Type: TypeVarString}, Name: "trace_id", Value: Value{Text: "abc"}},
		{ParamType: ParamType{Type: TypeLong}, Name: "n", Value: Value{Null: true}}}}
	enc, _ := q.Encode(nil, caps)
	got, err := DecodeCommand(enc, caps, nil)
	if err != nil || !reflect.DeepEqual(got, q) {
		t.Fatalf("query attributes round trip: %+v %v", got, err)
	}
	// Without attributes MySQL 8 still sends the two counts.
	enc, _ = (&Query{Query: "SELECT 2"}).Encode(nil, caps)
	if string(enc) != "\x03\x00\x01SELECT 2" {
		t.Errorf("query without attributes: %q", enc)
	}
	if got, err := DecodeCommand(enc, caps, nil); err != nil || got.(*Query).Query != "SELECT 2" {
		t.Errorf("decode: %+v %v", got, err)
	}
	// The same bytes without the capability are the query text itself.
	if got, _ := DecodeCommand(enc, allCaps41, nil); got.(*Query).Query != "\x00\x01SELECT 2" {
		t.Errorf("without CLIENT_QUERY_ATTRIBUTES: %q", got.(*Query).Query)
	}

	// COM_STMT_EXECUTE with query attributes: parameter_count, names.
	stmts := NewStatements()
	stmts.Prepared(&StmtPrepareOK{StatementID: 5, NumParams: 1})
	e := &StmtExecute{StatementID: 5, Flags: ParameterCountAvailable, IterationCount: 1, NewParamsBound: true, Params: []Param{
		{ParamType: ParamType{Type: TypeLong}, Value: Value{Text: "1"}},
		{ParamType: ParamType{Type: TypeVarString}, Name: "attr", Value: Value{Text: "x"}}}}
	enc, _ = e.Encode(nil, caps)
	got, err = DecodeCommand(enc, caps, stmts)
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("execute with attributes: %+v %v", got, err)
	}
	enc[10] = 0 // parameter_count below the statement's parameters
	if _, err := DecodeCommand(enc, caps, stmts); !errors.Is(err, ErrMalformed) {
		t.Errorf("parameter_count 0: %v", err)
	}
}

func TestStatementsTracker(t *testing.T) {
	caps := allCaps41
	s := NewStatements()
	s.MaxLongData = 6
	s.Prepared(&StmtPrepareOK{StatementID: 3, NumParams: 2, NumColumns: 1})
	if _, err := DecodeCommand([]byte{byte(ComStmtExecute), 4, 0, 0, 0, 0, 1, 0, 0, 0}, caps, s); !errors.Is(err, ErrUnknownStatement) {
		t.Errorf("unknown statement: %v", err)
	}
	cmd, err := DecodeCommand([]byte{byte(ComStmtExecute), 4, 0, 0, 0, 0, 1, 0, 0, 0}, caps, nil)
	if !errors.Is(err, ErrUnknownStatement) || cmd.(*StmtExecute).StatementID != 4 {
		t.Errorf("nil lookup: %+v %v", cmd, err)
	}
	// Without types and none bound before: refused.
	noTypes := []byte{byte(ComStmtExecute), 3, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0}
	if _, err := DecodeCommand(noTypes, caps, s); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "types") {
		t.Errorf("execute without types: %v", err)
	}
	for _, c := range []Command{
		&StmtSendLongData{StatementID: 3, ParamID: 1, Data: []byte("abcd")},
		&StmtSendLongData{StatementID: 3, ParamID: 1, Data: []byte("efgh")},
		&StmtSendLongData{StatementID: 3, ParamID: 9, Data: []byte("ignored")},
	} {
		s.Apply(c)
	}
	exec := &StmtExecute{StatementID: LastPreparedStatementID, IterationCount: 1, NewParamsBound: true, Params: []Param{
		{ParamType: ParamType{Type: TypeTiny, Unsigned: true}, Value: Value{Text: "200"}},
		{ParamType: ParamType{Type: TypeBlob}, LongData: true}}}
	enc, _ := exec.Encode(nil, caps)
	got, err := DecodeCommand(enc, caps, s)
	if err != nil {
		t.Fatal(err)
	}
	p := got.(*StmtExecute).Params
	if p[0].Text != "200" || !p[1].LongData || !p[1].Truncated || p[1].Text != "abcdef" {
		t.Errorf("params with long data: %+v", p)
	}
	s.Apply(got)
	// Types are remembered, long data is gone.
	exec2 := &StmtExecute{StatementID: 3, IterationCount: 1, Params: []Param{
		{Value: Value{Text: "7"}}, {Value: Value{Text: "x"}}}}
	exec2.Params[0].ParamType = ParamType{Type: TypeTiny, Unsigned: true}
	exec2.Params[1].ParamType = ParamType{Type: TypeBlob}
	enc, _ = exec2.Encode(nil, caps)
	got, err = DecodeCommand(enc, caps, s)
	if err != nil || !reflect.DeepEqual(got, exec2) {
		t.Errorf("execute with remembered types: %+v %v", got, err)
	}
	s.Apply(&StmtSendLongData{StatementID: 3, ParamID: 0, Data: []byte("z")})
	s.Apply(&StmtReset{StatementID: 3})
	if info, _ := s.LookupStmt(3); info.LongData[0].Sent {
		t.Error("COM_STMT_RESET kept long data")
	}
	s.Apply(&StmtClose{StatementID: 3})
	if s.Len() != 0 {
		t.Error("COM_STMT_CLOSE kept the statement")
	}
}

func TestValueText(t *testing.T) {
	if (Value{Null: true}).AuditText() != "NULL" || (Value{Text: "/w==", Base64: true}).AuditText() != "base64:/w==" || (Value{Text: "a"}).AuditText() != "a" {
		t.Error("AuditText")
	}
	for _, tc := range []struct {
		t    FieldType
		text string
		n    int // encoded length
	}{
		{TypeDate, "0000-00-00", 1}, {TypeDateTime, "2020-01-02 00:00:00", 5}, {TypeDateTime, "2020-01-02 03:04:05", 8},
		{TypeTimestamp, "2020-01-02 03:04:05.000007", 12}, {TypeTime, "00:00:00", 1}, {TypeTime, "26:00:00", 9},
		{TypeTime, "-01:02:03.400000", 13}, {TypeFloat, "3.25", 4}, {TypeNewDecimal, "-0.5", 5},
	} {
		enc, err := appendBinaryValue(nil, tc.t, false, Value{Text: tc.text})
		if err != nil || len(enc) != tc.n {
			t.Errorf("%s %q: % x %v", tc.t, tc.text, enc, err)
			continue
		}
		c := cursor{b: enc}
		v, _ := readBinaryValue(&c, tc.t, false, nil)
		want := tc.text
		if tc.t == TypeDate && tc.text == "0000-00-00" {
			want = "0000-00-00"
		}
		if c.err != nil || v.Text != want {
			t.Errorf("%s %q read back as %q %v", tc.t, tc.text, v.Text, c.err)
		}
	}
	for _, bad := range []struct {
		t    FieldType
		text string
	}{{TypeTiny, "300"}, {TypeDate, "2020-13"}, {TypeTime, "1:2"}, {TypeLong, "x"}, {TypeDateTime, "2020-01-01 01:02:03.1234567"}} {
		if _, err := appendBinaryValue(nil, bad.t, false, Value{Text: bad.text}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s %q: %v", bad.t, bad.text, err)
		}
	}
	// Lengths other than those the protocol allows are refused.
	for _, bad := range [][]byte{{5, 0, 0, 0, 0, 0}, {3, 0, 0, 0}} {
		c := cursor{b: bad}
		readBinaryValue(&c, TypeDateTime, false, nil)
		if !errors.Is(c.err, ErrMalformed) {
			t.Errorf("datetime % x: %v", bad, c.err)
		}
	}
}
