package mysql

import (
	"context"
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/agent/mysql/wire"
)

// FuzzUseTargets: the USE reader never panics, and whatever follows a
// leading USE statement cannot hide it.
func FuzzUseTargets(f *testing.F) {
	for _, s := range []string{"USE test", "use `a``b`", "/*!40101 USE x */", "SELECT 1; USE y", "SELECT 'a;USE b'",
		"-- c\nUSE z", "# c\nuse w", "/* c */ USE \"q\"", "SELECT `x;` ; use v", "USE 'unterminated", "/*M!1 use m */"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		_, _ = useTargets(q)
		_ = isUse(q)
		got, ok := useTargets("USE `first`;" + q)
		if len(got) == 0 || got[0] != "first" {
			t.Fatalf("leading USE lost before %q: %q %v", q, got, ok)
		}
	})
}

// FuzzClientCommands feeds arbitrary client bytes to the command decoder
// of an established session: it never panics, never consumes more than it
// was given, and forwards only bytes it was given, in order.
func FuzzClientCommands(f *testing.F) {
	cmd := func(c wire.CommandType, body string) []byte { return packet(0, append([]byte{byte(c)}, body...)) }
	seeds := [][]byte{
		cmd(wire.ComQuery, "SELECT 1"),
		cmd(wire.ComQuery, "USE secret"),
		cmd(wire.ComQuery, "/*!40101 use `test` */"),
		cmd(wire.ComInitDB, "test"),
		cmd(wire.ComStmtPrepare, "SELECT ? + ?"),
		cmd(wire.ComStmtExecute, "\x01\x00\x00\x00\x00\x01\x00\x00\x00"),
		cmd(wire.ComStmtSendLongData, "\x01\x00\x00\x00\x00\x00data"),
		cmd(wire.ComStmtClose, "\x01\x00\x00\x00"),
		cmd(wire.ComStmtReset, "\x01\x00\x00\x00"),
		cmd(wire.ComStmtFetch, "\x01\x00\x00\x00\x0a\x00\x00\x00"),
		cmd(wire.ComFieldList, "accounts\x00%"),
		cmd(wire.ComPing, ""),
		cmd(wire.ComSetOption, "\x00\x00"),
		cmd(wire.ComProcessKill, "\x05\x00\x00\x00"),
		cmd(wire.ComResetConnection, ""),
		cmd(wire.ComChangeUser, "root\x00\x00\x00"),
		cmd(wire.ComQuit, ""),
		cmd(wire.ComBinlogDump, "\x00"),
		append(cmd(wire.ComPing, ""), cmd(wire.ComQuery, "SELECT 2")...),
		{0x9c, 0x01, 0xfe, 0x33, 0x00, 0x10, 0x20},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		d, _, server := testDecoder(t, &recorder{})
		consumed, need, err := d.process(context.Background(), in)
		if consumed < 0 || consumed > len(in) {
			t.Fatalf("consumed %d of %d", consumed, len(in))
		}
		if err == nil && need != 0 && need <= len(in)-consumed {
			t.Fatalf("needs %d bytes but has %d unconsumed", need, len(in)-consumed)
		}
		// What was forwarded is the input's packets, in order, never
		// anything else.
		out := server.bytes()
		if len(out) > consumed || !isSubsequence(out, in[:consumed]) {
			t.Fatalf("forwarded %x from %x", out, in)
		}
	})
}

// isSubsequence reports whether a's bytes appear in b in order.
func isSubsequence(a, b []byte) bool {
	i := 0
	for _, c := range b {
		if i < len(a) && a[i] == c {
			i++
		}
	}
	return i == len(a) || strings.HasPrefix(string(b), string(a))
}
