package postgres

import (
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestBindExecuteDecodeAsPgproto3 holds the decoder's own Bind and Execute
// decoding to pgproto3's: on every prefix and every one-byte change of
// some messages, both decode to the same fields or both decline.
func TestBindExecuteDecodeAsPgproto3(t *testing.T) {
	binds := []*pgproto3.Bind{
		{},
		{PreparedStatement: "P0_1", Parameters: [][]byte{[]byte("73412")}},
		{DestinationPortal: "c1", PreparedStatement: "s", ParameterFormatCodes: []int16{0, 1}, Parameters: [][]byte{[]byte("x"), nil}, ResultFormatCodes: []int16{1}},
		{PreparedStatement: "s", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 7}, {}, nil}, ResultFormatCodes: []int16{0, 1, 0}},
	}
	d := newClientDecoder(DefaultMaxMessage, DefaultMaxCopyData, DefaultMaxParam, newStmtQueue())
	d.stmts["s"] = &prepared{name: "s"}
	d.portals["c1"] = &portal{name: "c1"}
	for _, m := range binds {
		full := encodeAll(t, m)[headerLength:]
		for _, body := range variants(full) {
			var want pgproto3.Bind
			werr := want.Decode(body)
			ok := d.decodeBind(body)
			agree(t, "Bind", body, ok, werr, func() bool { return sameBind(&d.bind, &want) }, d.bind, want)
		}
	}
	for _, m := range []*pgproto3.Execute{{}, {Portal: "c1", MaxRows: 10}} {
		full := encodeAll(t, m)[headerLength:]
		for _, body := range variants(full) {
			var want pgproto3.Execute
			werr := want.Decode(body)
			ok := d.decodeExecute(body)
			agree(t, "Execute", body, ok, werr, func() bool { return d.execute == want }, d.execute, want)
		}
	}
}

// agree fails t unless the decoder and pgproto3 both declined body, or
// both decoded it (ok, werr nil) to the same fields (same).
func agree(t *testing.T, msg string, body []byte, ok bool, werr error, same func() bool, got, want any) {
	t.Helper()
	switch {
	case ok && werr != nil:
		t.Fatalf("%s %x: decoded, pgproto3 fails: %v", msg, body, werr)
	case ok && !same():
		t.Fatalf("%s %x: decoded %+v, pgproto3 %+v", msg, body, got, want)
	case !ok && werr == nil:
		t.Fatalf("%s %x: declined, pgproto3 decodes it", msg, body)
	}
}

// variants are b, its prefixes and b with each byte set to 0x00 and 0xff.
func variants(b []byte) [][]byte {
	var out [][]byte
	for i := 0; i <= len(b); i++ {
		out = append(out, b[:i])
	}
	for i := range b {
		for _, v := range []byte{0, 0xff} {
			c := append([]byte(nil), b...)
			c[i] = v
			out = append(out, c)
		}
	}
	return out
}

func sameBind(a, b *pgproto3.Bind) bool {
	norm := func(s [][]byte) [][]byte {
		if len(s) == 0 {
			return nil
		}
		return s
	}
	codes := func(s []int16) []int16 {
		if len(s) == 0 {
			return nil
		}
		return s
	}
	return a.DestinationPortal == b.DestinationPortal && a.PreparedStatement == b.PreparedStatement &&
		reflect.DeepEqual(codes(a.ParameterFormatCodes), codes(b.ParameterFormatCodes)) &&
		reflect.DeepEqual(norm(a.Parameters), norm(b.Parameters)) &&
		reflect.DeepEqual(codes(a.ResultFormatCodes), codes(b.ResultFormatCodes))
}
