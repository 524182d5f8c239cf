package wire

import (
	"errors"
	"testing"
)

// feedAll feeds packets and requires done exactly at the last one.
func feedAll(t *testing.T, d *ResponseDecoder, cmd CommandType, packets ...[]byte) Response {
	t.Helper()
	if !d.Begin(cmd) {
		t.Fatalf("%s expects no response", cmd)
	}
	for i, p := range packets {
		done, err := d.Feed(p)
		if err != nil {
			t.Fatalf("%s packet %d: %v", cmd, i, err)
		}
		if done != (i == len(packets)-1) {
			t.Fatalf("%s packet %d: done=%v", cmd, i, done)
		}
	}
	return d.Response()
}

func TestResponseDecoderSynthetic(t *testing.T) {
	caps := ClientProtocol41 | ClientDeprecateEOF | ClientSessionTrack | MariaDBClientProgress
	d := NewResponseDecoder(caps)
	col := (&ColumnDefinition41{Catalog: "def", Name: "c", Type: TypeLong}).Encode(nil, caps)
	okEnd := func(status StatusFlags) []byte {
		return (&OKPacket{Header: EOFHeader, Status: status}).Encode(nil, caps)
	}
	progress := []byte{0xff, 0xff, 0xff, 1, 2, 0x10, 0, 0, 0}

	// LOCAL INFILE request, then (after the client's data) OK.
	r := feedAll(t, d, ComQuery, []byte("\xfb/tmp/data.csv"), progress,
		(&OKPacket{AffectedRows: 10}).Encode(nil, caps))
	if !r.LocalInfileRequested || r.LocalInfile != "/tmp/data.csv" || r.AffectedRows != 10 {
		t.Errorf("local infile: %+v", r)
	}

	// Cursor opened under CLIENT_DEPRECATE_EOF.
	r = feedAll(t, d, ComStmtExecute, []byte{1}, col, okEnd(ServerStatusCursorExists|ServerStatusAutocommit))
	if !r.CursorOpened || r.Rows != 0 {
		t.Errorf("cursor: %+v", r)
	}
	// Binary rows and a 0xfe terminator.
	r = feedAll(t, d, ComStmtFetch, []byte{0, 0, 1, 0, 0, 0}, []byte{0, 0, 2, 0, 0, 0}, okEnd(ServerStatusLastRowSent))
	if r.Rows != 2 || !r.Status.Has(ServerStatusLastRowSent) {
		t.Errorf("fetch: %+v", r)
	}
	// Prepare: one parameter, one column, no EOFs.
	prep := (&StmtPrepareOK{StatementID: 4, NumParams: 1, NumColumns: 1}).Encode(nil, caps)
	r = feedAll(t, d, ComStmtPrepare, prep, col, col)
	if r.Prepare.StatementID != 4 || r.Columns != 1 {
		t.Errorf("prepare: %+v", r)
	}
	// Field list ends at its terminator.
	r = feedAll(t, d, ComFieldList, col, col, okEnd(0))
	if r.Columns != 2 {
		t.Errorf("field list: %+v", r)
	}
	// COM_SET_OPTION answered by an EOF packet.
	classic := NewResponseDecoder(ClientProtocol41)
	feedAll(t, classic, ComSetOption, (&EOFPacket{}).Encode(nil, ClientProtocol41))
	// Prepare with EOFs after each group.
	feedAll(t, classic, ComStmtPrepare, prep, col, []byte{0xfe, 0, 0, 2, 0}, col, []byte{0xfe, 0, 0, 2, 0})
	// A text row starting with 0xfe is a row when it is long: not a terminator.
	if classic.isTerminator(append([]byte{0xfe}, make([]byte, 20)...)) {
		t.Error("20-byte 0xfe packet taken for EOF without CLIENT_DEPRECATE_EOF")
	}

	// No response for these.
	for _, cmd := range []CommandType{ComQuit, ComStmtClose, ComStmtSendLongData} {
		if d.Begin(cmd) || !d.Done() || ExpectsResponse(cmd) {
			t.Errorf("%s should expect no response", cmd)
		}
	}
	// Errors: a packet after the end, an empty packet, garbage first packet.
	feedAll(t, d, ComPing, (&OKPacket{}).Encode(nil, caps))
	if _, err := d.Feed([]byte{0}); !errors.Is(err, ErrMalformed) {
		t.Errorf("packet after done: %v", err)
	}
	d.Begin(ComQuery)
	if _, err := d.Feed(nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("empty packet: %v", err)
	}
	d.Begin(ComQuery)
	if _, err := d.Feed([]byte{0x05, 0x01}); !errors.Is(err, ErrMalformed) {
		t.Errorf("column count with trailing byte: %v", err)
	}
	d.Begin(ComPing)
	if _, err := d.Feed([]byte{0x01, 0x02}); !errors.Is(err, ErrMalformed) {
		t.Errorf("ping answered by 0x01: %v", err)
	}
}

func TestResponseDecoderFeedHeadAndSchema(t *testing.T) {
	caps := ClientProtocol41 | ClientDeprecateEOF | ClientSessionTrack
	d := NewResponseDecoder(caps)
	// A row of 3 MiB given by its first MiB only.
	d.Begin(ComQuery)
	col := (&ColumnDefinition41{Catalog: "def", Name: "b", Type: TypeLongBlob}).Encode(nil, caps)
	for _, p := range [][]byte{{1}, col} {
		if done, err := d.Feed(p); done || err != nil {
			t.Fatal(done, err)
		}
	}
	head := make([]byte, 1<<20)
	head[0] = 0xfe // a length prefix of 8 bytes: not a terminator at this size
	if done, err := d.FeedHead(head, 3<<20); done || err != nil {
		t.Fatalf("large row: %v %v", done, err)
	}
	if _, err := d.FeedHead(head[:10], 3<<20); err == nil {
		t.Fatal("a head too short for its payload was accepted")
	}
	end := (&OKPacket{Header: EOFHeader, Status: ServerStatusAutocommit}).Encode(nil, caps)
	if done, err := d.Feed(end); !done || err != nil {
		t.Fatal(done, err)
	}
	if r := d.Response(); r.Rows != 1 || r.Bytes != uint64(1+len(col)+3<<20+len(end)) {
		t.Fatalf("response %+v", r)
	}
	// Outside rows a partial packet is malformed.
	d.Begin(ComPing)
	if _, err := d.FeedHead(head, 2<<20); !errors.Is(err, ErrMalformed) {
		t.Fatalf("partial OK: %v", err)
	}

	// USE answered with the new schema in the session state.
	state := AppendLenEncBytes([]byte{0x01}, AppendLenEncString(nil, "other"))
	state = append(state, 0x00) // SESSION_TRACK_SYSTEM_VARIABLES follows
	state = AppendLenEncBytes(state, append(AppendLenEncString(nil, "autocommit"), AppendLenEncString(nil, "ON")...))
	ok := (&OKPacket{Status: ServerStatusAutocommit | ServerSessionStateChanged, SessionState: state}).Encode(nil, caps)
	r := feedAll(t, d, ComQuery, ok)
	if !r.SchemaChanged || r.Schema != "other" {
		t.Fatalf("schema not tracked: %+v", r)
	}
	r = feedAll(t, d, ComQuery, (&OKPacket{Status: ServerStatusAutocommit}).Encode(nil, caps))
	if r.SchemaChanged {
		t.Fatalf("schema changed without session state: %+v", r)
	}
}

// Result sets as wide as the protocol allows are followed, with and without
// EOF packets, and one column more is malformed.
func TestResponseDecoderWideResult(t *testing.T) {
	for _, caps := range []Capabilities{ClientProtocol41, ClientProtocol41 | ClientDeprecateEOF} {
		d := NewResponseDecoder(caps)
		col := (&ColumnDefinition41{Catalog: "def", Name: "c", Type: TypeLong}).Encode(nil, caps)
		packets := [][]byte{AppendLenEncInt(nil, MaxColumns)}
		for range MaxColumns {
			packets = append(packets, col)
		}
		end := (&OKPacket{Header: EOFHeader}).Encode(nil, caps)
		if !caps.Has(ClientDeprecateEOF) {
			end = (&EOFPacket{}).Encode(nil, caps)
			packets = append(packets, end)
		}
		row := make([]byte, 0, 2*MaxColumns)
		for range MaxColumns {
			row = append(row, 1, '7')
		}
		packets = append(packets, row, end)
		r := feedAll(t, d, ComQuery, packets...)
		if r.Columns != MaxColumns || r.Rows != 1 {
			t.Errorf("caps %v: %+v", caps, r)
		}
		d.Begin(ComQuery)
		if _, err := d.Feed(AppendLenEncInt(nil, MaxColumns+1)); !errors.Is(err, ErrMalformed) {
			t.Errorf("caps %v: %d columns: %v", caps, MaxColumns+1, err)
		}
	}
}

func TestLocalInfileRequest(t *testing.T) {
	var r LocalInfileRequest
	if err := r.Decode([]byte("\xfb/tmp/rows.csv")); err != nil || r.Filename != "/tmp/rows.csv" {
		t.Fatalf("decode: %+v %v", r, err)
	}
	if got := string(r.Encode(nil)); got != "\xfb/tmp/rows.csv" {
		t.Fatalf("encode: %q", got)
	}
	for _, bad := range []string{"", "\x00rows.csv"} {
		if err := r.Decode([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("decode %q: %v", bad, err)
		}
	}
	d := NewResponseDecoder(allCaps41)
	d.Begin(ComQuery)
	if done, err := d.Feed([]byte("\xfbrows.csv")); done || err != nil {
		t.Fatalf("request: done=%v err=%v", done, err)
	}
	if name, ok := d.LocalInfile(); !ok || name != "rows.csv" {
		t.Fatalf("LocalInfile() = %q, %v", name, ok)
	}
	if done, err := d.Feed([]byte{0, 3, 0, 2, 0, 0, 0}); !done || err != nil {
		t.Fatalf("OK: done=%v err=%v", done, err)
	}
	if resp := d.Response(); !resp.LocalInfileRequested || resp.LocalInfile != "rows.csv" || resp.AffectedRows != 3 {
		t.Fatalf("response %+v", resp)
	}
}
