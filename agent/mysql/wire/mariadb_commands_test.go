package wire

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestMariaDBCommands(t *testing.T) {
	addr := startMariaDB(t)
	setupUsers(t, addr)
	for _, tc := range []struct {
		name string
		caps Capabilities
	}{{"classic", capsClassic}, {"deprecate_eof", capsDeprEOF}, {"mariadb_ext", capsMariaExt}} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialMariaDB(t, addr, nativeUser, userPass, "wiretest", tc.caps)
			if err != nil {
				t.Fatal(err)
			}
			if c.caps.Has(MariaDBClientCacheMetadata) != (tc.name == "mariadb_ext") {
				t.Fatalf("negotiated %s", c.caps)
			}
			table := "t_" + tc.name
			testTextCommands(t, c, table)
			testPreparedStatements(t, c, table)
			testOtherCommands(t, c, table)
		})
	}
}

func testTextCommands(t *testing.T, c *testClient, table string) {
	c.exec("CREATE TABLE " + table + " (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))")
	r := c.exec("INSERT INTO " + table + " (v) VALUES ('a'),('b'),('c')")
	if r.AffectedRows != 3 || r.LastInsertID != 1 || r.Results != 1 || !strings.Contains(r.Info, "Records: 3") {
		t.Errorf("insert: %+v", r)
	}
	r = c.exec("UPDATE " + table + " SET v='z' WHERE id > 1")
	if r.AffectedRows != 2 || !strings.Contains(r.Info, "Rows matched: 2") {
		t.Errorf("update: %+v", r)
	}
	resp, packets := c.mustDo(&Query{Query: "SELECT id, v FROM " + table + " ORDER BY id"})
	if resp.Rows != 3 || resp.Columns != 2 || resp.Results != 1 || resp.Bytes == 0 {
		t.Errorf("select: %+v", resp)
	}
	cols, rows := resultRows(t, c.caps, packets, false, nil)
	if cols[1].Name != "v" || cols[1].Table != table || cols[0].Type != TypeLong {
		t.Errorf("columns: %+v", cols)
	}
	if got := rows[2][1].Text + rows[0][1].Text; got != "za" {
		t.Errorf("rows: %v", rows)
	}

	// An error carries its code, SQLSTATE and message.
	resp, _, err := c.do(&Query{Query: "SELECT * FROM no_such_table"})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Failed || resp.ErrorCode != 1146 || resp.SQLState != "42S02" || !strings.Contains(resp.ErrorMessage, "no_such_table") {
		t.Errorf("error: %+v", resp)
	}

	// Warnings are counted.
	r = c.exec("SELECT 1/0")
	if r.Warnings != 1 || r.Rows != 1 {
		t.Errorf("1/0: %+v", r)
	}

	// Multi-statements: three results chained by SERVER_MORE_RESULTS_EXISTS.
	r = c.exec("SELECT 1; SELECT 2, 3 UNION SELECT 4, 5; DELETE FROM " + table + " WHERE id = 3")
	if r.Results != 3 || r.Rows != 3 || r.AffectedRows != 1 || r.Status.Has(ServerMoreResultsExists) || r.Columns != 2 {
		t.Errorf("multi-statement: %+v", r)
	}
	resp, _, err = c.do(&Query{Query: "SELECT 1; SELECT * FROM no_such_table; SELECT 2"})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Failed || resp.ErrorCode != 1146 || resp.Results != 1 || resp.Rows != 1 {
		t.Errorf("multi-statement with error: %+v", resp)
	}
}

// typedParams are parameters of every kind a client sends, with the text
// the server gives back for them in a text result set.
func typedParams() []Param {
	p := func(t FieldType, unsigned bool, text string) Param {
		return Param{ParamType: ParamType{Type: t, Unsigned: unsigned}, Value: Value{Text: text}}
	}
	blob := []byte{0, 1, 2, 0xff, 0xfe, 'x'}
	return []Param{
		p(TypeTiny, false, "-128"),
		p(TypeTiny, true, "255"),
		p(TypeShort, false, "-32768"),
		p(TypeLong, false, "-8388608"),
		p(TypeLong, false, "-2147483648"),
		p(TypeLong, true, "4294967295"),
		p(TypeLongLong, false, "-9223372036854775808"),
		p(TypeLongLong, true, "18446744073709551615"),
		p(TypeFloat, false, "1.5"),
		p(TypeDouble, false, "0.125"),
		p(TypeNewDecimal, false, "12345.678"),
		p(TypeVarString, false, "héllo wörld"),
		p(TypeString, false, "multi\nline"),
		{ParamType: ParamType{Type: TypeBlob}, Value: Value{Text: base64.StdEncoding.EncodeToString(blob), Base64: true}},
		p(TypeDate, false, "2024-02-29"),
		p(TypeDateTime, false, "2024-02-29 13:14:15.123456"),
		p(TypeTimestamp, false, "2021-06-01 00:00:01.500000"),
		p(TypeTime, false, "-838:59:58.500000"),
		p(TypeShort, false, "2024"),
		{ParamType: ParamType{Type: TypeTinyBlob}, Value: Value{Text: base64.StdEncoding.EncodeToString([]byte{0xa5}), Base64: true}},
		p(TypeMediumBlob, false, `{"k": [1, 2]}`),
		p(TypeVarString, false, "b"),
		p(TypeVarString, false, "x,y"),
		{ParamType: ParamType{Type: TypeLong}, Value: Value{Null: true}},
	}
}

const typesColumns = "ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, i INT, iu INT UNSIGNED, " +
	"bi BIGINT, bu BIGINT UNSIGNED, f FLOAT, d DOUBLE, dc DECIMAL(10,3), vc VARCHAR(50), tx TEXT, bl BLOB, " +
	"dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6), yr YEAR, bt BIT(8), js JSON, " +
	"en ENUM('a','b'), st SET('x','y'), nl INT NULL"

func sameValues(t *testing.T, what string, got []Value, want []Param) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i].Value {
			t.Errorf("%s: column %d (%s) = %+v, want %+v", what, i, want[i].Type, got[i], want[i].Value)
		}
	}
}

func testPreparedStatements(t *testing.T, c *testClient, table string) {
	tt := table + "_types"
	c.exec("CREATE TABLE " + tt + " (id INT AUTO_INCREMENT PRIMARY KEY, " + typesColumns + ")")
	params := typedParams()
	marks := strings.TrimSuffix(strings.Repeat("?,", len(params)), ",")
	names := "ti,tu,si,mi,i,iu,bi,bu,f,d,dc,vc,tx,bl,dt,dtm,ts,tm,yr,bt,js,en,st,nl"

	prep, _ := c.mustDo(&StmtPrepare{Query: "INSERT INTO " + tt + " (" + names + ") VALUES (" + marks + ")"})
	if int(prep.Prepare.NumParams) != len(params) || prep.Prepare.NumColumns != 0 || prep.Prepare.StatementID == 0 {
		t.Fatalf("prepare: %+v", prep.Prepare)
	}
	id := prep.Prepare.StatementID
	if info, ok := c.stmts.LookupStmt(id); !ok || info.NumParams != len(params) {
		t.Fatalf("tracker: %+v %v", info, ok)
	}
	exec := &StmtExecute{StatementID: id, IterationCount: 1, NewParamsBound: true, Params: params}
	r, _ := c.mustDo(exec)
	if r.AffectedRows != 1 || r.LastInsertID != 1 {
		t.Errorf("execute: %+v", r)
	}
	// Second execute without types: the server and the tracker reuse them.
	exec2 := &StmtExecute{StatementID: id, IterationCount: 1, Params: params}
	payload, err := exec2.Encode(nil, c.caps)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeCommand(payload, c.caps, c.stmts)
	if err != nil {
		t.Fatal(err)
	}
	if e := back.(*StmtExecute); e.NewParamsBound || len(e.Params) != len(params) || e.Params[7].Unsigned != true || e.Params[7].Text != params[7].Text {
		t.Errorf("execute without types decoded as %+v", e)
	}
	if r, _ = c.mustDo(exec2); r.AffectedRows != 1 || r.LastInsertID != 2 {
		t.Errorf("second execute: %+v", r)
	}

	// What the server stored is what we decoded from our own packets.
	rows := c.query("SELECT " + names + " FROM " + tt + " ORDER BY id")
	if len(rows) != 2 {
		t.Fatalf("%d rows", len(rows))
	}
	sameValues(t, "text row", rows[0], params)
	sameValues(t, "text row 2", rows[1], params)

	// The same row through the binary protocol.
	sel, packets := c.mustDo(&StmtPrepare{Query: "SELECT " + names + " FROM " + tt + " WHERE id = ?"})
	if int(sel.Prepare.NumColumns) != len(params) || sel.Prepare.NumParams != 1 {
		t.Fatalf("prepare select: %+v", sel.Prepare)
	}
	prepCols := preparedColumns(t, c.caps, packets, sel.Prepare)
	for _, idText := range []string{"1", "2"} {
		r, packets = c.mustDo(&StmtExecute{StatementID: sel.Prepare.StatementID, IterationCount: 1, NewParamsBound: true,
			Params: []Param{{ParamType: ParamType{Type: TypeLongLong}, Value: Value{Text: idText}}}})
		if r.Rows != 1 || r.Columns != len(params) {
			t.Errorf("binary select: %+v", r)
		}
		_, brows := resultRows(t, c.caps, packets, true, prepCols)
		sameValues(t, "binary row "+idText, brows[0], params)
	}

	// Long data: two pieces for one parameter, then execute.
	ins, _ := c.mustDo(&StmtPrepare{Query: "INSERT INTO " + table + " (v) VALUES (?)"})
	lid := ins.Prepare.StatementID
	for _, piece := range []string{"lo", "ng"} {
		if r, _ := c.mustDo(&StmtSendLongData{StatementID: lid, ParamID: 0, Data: []byte(piece)}); r.Results != 0 {
			t.Errorf("send long data has a response: %+v", r)
		}
	}
	longExec := &StmtExecute{StatementID: lid, IterationCount: 1, NewParamsBound: true,
		Params: []Param{{ParamType: ParamType{Type: TypeVarString}, LongData: true}}}
	payload, _ = longExec.Encode(nil, c.caps)
	back, err = DecodeCommand(payload, c.caps, c.stmts)
	if err != nil {
		t.Fatal(err)
	}
	if p := back.(*StmtExecute).Params[0]; !p.LongData || p.Text != "long" {
		t.Errorf("long data parameter decoded as %+v", p)
	}
	c.mustDo(longExec)
	if info, _ := c.stmts.LookupStmt(lid); len(info.LongData) != 1 || info.LongData[0].Sent {
		t.Errorf("long data not cleared after execute: %+v", info.LongData)
	}
	if rows := c.query("SELECT COUNT(*) FROM " + table + " WHERE v = 'long'"); rows[0][0].Text != "1" {
		t.Errorf("long data row: %v", rows)
	}

	// A failing execute: duplicate key.
	dup, _ := c.mustDo(&StmtPrepare{Query: "INSERT INTO " + table + " (id, v) VALUES (?, 'dup')"})
	r, _, err = c.do(&StmtExecute{StatementID: dup.Prepare.StatementID, IterationCount: 1, NewParamsBound: true,
		Params: []Param{{ParamType: ParamType{Type: TypeLong}, Value: Value{Text: "1"}}}})
	if err != nil || !r.Failed || r.ErrorCode != 1062 || r.SQLState != "23000" {
		t.Errorf("duplicate key: %+v %v", r, err)
	}

	// A cursor: execute opens it, fetches return the rows.
	r, _ = c.mustDo(&StmtExecute{StatementID: sel.Prepare.StatementID, Flags: CursorTypeReadOnly, IterationCount: 1, NewParamsBound: true,
		Params: []Param{{ParamType: ParamType{Type: TypeLongLong}, Value: Value{Text: "1"}}}})
	if !r.CursorOpened || r.Rows != 0 || !r.Status.Has(ServerStatusCursorExists) {
		t.Errorf("cursor execute: %+v", r)
	}
	r, _ = c.mustDo(&StmtFetch{StatementID: sel.Prepare.StatementID, NumRows: 5})
	if r.Rows != 1 || !r.Status.Has(ServerStatusLastRowSent) {
		t.Errorf("fetch: %+v", r)
	}

	// Reset and close.
	if r, _ = c.mustDo(&StmtReset{StatementID: sel.Prepare.StatementID}); r.Results != 1 {
		t.Errorf("reset: %+v", r)
	}
	before := c.stmts.Len()
	c.mustDo(&StmtClose{StatementID: sel.Prepare.StatementID})
	if c.stmts.Len() != before-1 {
		t.Errorf("close: tracker has %d statements, had %d", c.stmts.Len(), before)
	}
	_, err = DecodeCommand([]byte{byte(ComStmtExecute), byte(sel.Prepare.StatementID), 0, 0, 0, 0, 1, 0, 0, 0}, c.caps, c.stmts)
	if !errors.Is(err, ErrUnknownStatement) {
		t.Errorf("execute of a closed statement: %v", err)
	}
}

// preparedColumns decodes the column definitions of a prepare response.
func preparedColumns(t *testing.T, caps Capabilities, packets [][]byte, ok StmtPrepareOK) []ColumnDefinition41 {
	t.Helper()
	i := 1 + int(ok.NumParams)
	if ok.NumParams > 0 && !caps.Has(ClientDeprecateEOF) {
		i++
	}
	cols := make([]ColumnDefinition41, ok.NumColumns)
	for j := range cols {
		if err := cols[j].Decode(packets[i+j], caps); err != nil {
			t.Fatalf("prepared column %d: %v", j, err)
		}
	}
	return cols
}

func testOtherCommands(t *testing.T, c *testClient, table string) {
	r, _ := c.mustDo(&Ping{})
	if r.Results != 1 {
		t.Errorf("ping: %+v", r)
	}
	r, _ = c.mustDo(&Statistics{})
	if !strings.Contains(r.Statistics, "Uptime") {
		t.Errorf("statistics: %+v", r)
	}
	r, _ = c.mustDo(&FieldList{Table: table})
	if r.Columns != 2 {
		t.Errorf("field list: %+v", r)
	}
	r, _ = c.mustDo(&InitDB{Schema: "wiretest"})
	if r.Results != 1 {
		t.Errorf("init db: %+v", r)
	}
	r, _, err := c.do(&InitDB{Schema: "mysql"})
	if err != nil || !r.Failed || r.ErrorCode != 1044 || r.SQLState != "42000" {
		t.Errorf("init db denied: %+v %v", r, err)
	}
	c.mustDo(&SetOption{Option: OptionMultiStatementsOff})
	r, _, err = c.do(&Query{Query: "SELECT 1; SELECT 2"})
	if err != nil || !r.Failed || r.ErrorCode != 1064 {
		t.Errorf("multi-statement after COM_SET_OPTION off: %+v %v", r, err)
	}
	c.mustDo(&SetOption{Option: OptionMultiStatementsOn})
	r, _, err = c.do(&ProcessKill{ConnectionID: 999999})
	if err != nil || !r.Failed || r.ErrorCode != 1094 {
		t.Errorf("kill of an unknown thread: %+v %v", r, err)
	}
	r, _ = c.mustDo(&ProcessInfo{})
	if r.Rows < 1 || r.Columns < 8 {
		t.Errorf("process info: %+v", r)
	}
	// MariaDB 10.11 no longer implements COM_CREATE_DB and COM_DROP_DB.
	for _, cmd := range []Command{&CreateDB{Schema: "wire_x"}, &DropDB{Schema: "wire_x"}} {
		r, _, err = c.do(cmd)
		if err != nil || !r.Failed || r.ErrorCode != 1047 || r.SQLState != "08S01" {
			t.Errorf("%s: %+v %v", cmd.Type(), r, err)
		}
	}
	c.mustDo(&StmtPrepare{Query: "SELECT 1"})
	c.mustDo(&ResetConnection{})
	if c.stmts.Len() != 0 {
		t.Errorf("COM_RESET_CONNECTION left %d statements in the tracker", c.stmts.Len())
	}
	if r, _ := c.mustDo(&Quit{}); r.Results != 0 {
		t.Errorf("quit has a response: %+v", r)
	}
	if _, err := c.r.ReadPacket(); err == nil {
		t.Errorf("connection still open after COM_QUIT")
	}
}

// Parameter types that MariaDB reads differently from what their bytes say
// are refused: the audit would otherwise record values the server never
// saw. The server's own reading shows why.
func TestMariaDBParamTypesRefused(t *testing.T) {
	addr := startMariaDB(t)
	setupUsers(t, addr)
	c, err := dialMariaDB(t, addr, nativeUser, userPass, "wiretest", capsDeprEOF)
	if err != nil {
		t.Fatal(err)
	}
	prep, _ := c.mustDo(&StmtPrepare{Query: "SELECT ?, ?"})
	id := prep.Prepare.StatementID
	for _, typ := range []FieldType{TypeInt24, TypeYear, TypeBit, TypeGeometry, TypeJSON, TypeNewDate, TypeTimestamp2, TypeVector} {
		exec := &StmtExecute{StatementID: id, IterationCount: 1, NewParamsBound: true, Params: []Param{
			{ParamType: ParamType{Type: typ}, Value: Value{Text: "2024"}}, {ParamType: ParamType{Type: TypeTiny}, Value: Value{Text: "7"}}}}
		if typ == TypeBit || typ == TypeGeometry || typ == TypeJSON || typ == TypeVector {
			exec.Params[0].Value = Value{Text: "x"}
		}
		if typ == TypeNewDate || typ == TypeTimestamp2 {
			exec.Params[0].Value = Value{Text: "2024-01-02"}
		}
		payload, err := exec.Encode(nil, c.caps)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		_, err = DecodeCommand(payload, c.caps, c.stmts)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), typ.String()) {
			t.Errorf("%s parameter: %v, want a malformed error naming the type", typ, err)
		}
	}
	// MariaDB takes an INT24 parameter as NULL and reads the next parameter
	// from its bytes: 0xfb is -5 as a TINY.
	exec := &StmtExecute{StatementID: id, IterationCount: 1, NewParamsBound: true, Params: []Param{
		{ParamType: ParamType{Type: TypeInt24}, Value: Value{Text: "-5"}}, {ParamType: ParamType{Type: TypeTiny}, Value: Value{Text: "7"}}}}
	payload, _ := exec.Encode(nil, c.caps)
	c.w.SetSeq(0)
	if err := c.write(payload); err != nil {
		t.Fatal(err)
	}
	c.dec.Begin(ComStmtExecute)
	var packets [][]byte
	for {
		p, err := c.read()
		if err != nil {
			t.Fatal(err)
		}
		packets = append(packets, append([]byte(nil), p...))
		if done, err := c.dec.Feed(p); err != nil {
			t.Fatal(err)
		} else if done {
			break
		}
	}
	_, rows := resultRows(t, c.caps, packets, true, nil)
	if !rows[0][0].Null || rows[0][1].Text != "-5" {
		t.Errorf("server read INT24, TINY as %+v; the refusal rests on it reading NULL, -5", rows[0])
	}
}
