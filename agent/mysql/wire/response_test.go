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
