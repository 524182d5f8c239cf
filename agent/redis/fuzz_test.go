package redis

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzRESPCommand checks the client decoder on any input: it never
// panics, a command it accepts re-encodes to one that parses to the same
// arguments, an incomplete one asks for more than it has, and a prefix of
// a command is never taken for a different command.
func FuzzRESPCommand(f *testing.F) {
	for _, s := range []string{
		"*1\r\n$4\r\nPING\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
		"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n",
		"GET \"a b\\x00\" 'c\\'d'\r\n",
		"*1\r\n:1\r\n",
		"*-1\r\n",
		"*2\r\n$3\r\nGET\r\n$-5\r\n",
		"\r\n",
	} {
		f.Add([]byte(s))
	}
	lim := Limits{MaxCommand: 1 << 16, MaxArgs: 1 << 10, MaxBulk: 1 << 15, MaxInline: 1 << 10}
	f.Fuzz(func(t *testing.T, b []byte) {
		cmd, size, need, err := ParseCommand(b, lim)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Reason == "" {
				t.Fatalf("error %v is not a ProtocolError with a reason", err)
			}
			return
		}
		if size == 0 {
			if need <= len(b) {
				t.Fatalf("incomplete command asks for %d bytes, has %d", need, len(b))
			}
			return
		}
		if size > len(b) {
			t.Fatalf("size %d of %d bytes", size, len(b))
		}
		// Every shorter prefix is incomplete or an error, never a command.
		for i := 0; i < size; i++ {
			if _, sz, _, err := ParseCommand(b[:i], lim); err == nil && sz != 0 && !cmd.Inline {
				t.Fatalf("prefix of %d bytes parsed as a command of %d", i, sz)
			}
		}
		if len(cmd.Args) == 0 {
			return
		}
		enc := AppendCommand(nil, cmd.Args...)
		again, sz, _, err := ParseCommand(enc, Limits{})
		if err != nil || sz != len(enc) || len(again.Args) != len(cmd.Args) {
			t.Fatalf("re-encoded command: %v %d %d", err, sz, len(again.Args))
		}
		for i := range cmd.Args {
			if !bytes.Equal(again.Args[i], cmd.Args[i]) {
				t.Fatalf("argument %d changed: %q → %q", i, cmd.Args[i], again.Args[i])
			}
		}
		_, _ = render(cmd.Args, secretArgs(commandName(cmd.Args), cmd.Args), 16)
	})
}

// FuzzRESPReply checks the reply scanner: fed the same bytes whole or in
// two parts, it finds the same replies or the same failure.
func FuzzRESPReply(f *testing.F) {
	for _, s := range []string{
		"+OK\r\n", "-ERR x\r\n", ":1\r\n", "$3\r\nabc\r\n", "$-1\r\n", "*2\r\n$1\r\na\r\n:2\r\n",
		"%1\r\n+a\r\n:1\r\n", ">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n", "|1\r\n+k\r\n+v\r\n+OK\r\n",
		"!3\r\nerr\r\n", "=7\r\ntxt:abc\r\n", "_\r\n#f\r\n,1.5\r\n(1\r\n~1\r\n*0\r\n",
	} {
		f.Add([]byte(s), uint16(2))
	}
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		scan := func(parts ...[]byte) ([]Reply, []int, error) {
			var s ReplyScanner
			var rs []Reply
			var ends []int
			base := 0
			for _, p := range parts {
				err := s.Feed(p, func(start, end int, r *Reply) {
					if end < start || end > len(p) {
						t.Fatalf("reply ends at %d, started %d, in %d bytes", end, start, len(p))
					}
					rs = append(rs, *r)
					ends = append(ends, base+end)
				})
				if err != nil {
					return rs, ends, err
				}
				base += len(p)
			}
			return rs, ends, nil
		}
		whole, wEnds, werr := scan(b)
		at := int(cut) % (len(b) + 1)
		split, sEnds, serr := scan(b[:at], b[at:])
		if (werr == nil) != (serr == nil) {
			if werr == nil || len(split) > len(whole) {
				t.Fatalf("whole: %v, split at %d: %v", werr, at, serr)
			}
			return
		}
		if werr != nil {
			return
		}
		if len(whole) != len(split) {
			t.Fatalf("whole %d replies, split at %d %d", len(whole), at, len(split))
		}
		total := int64(0)
		for i := range whole {
			if wEnds[i] != sEnds[i] || whole[i].Type != split[i].Type || whole[i].Elems != split[i].Elems || whole[i].Err != split[i].Err || whole[i].Bytes != split[i].Bytes {
				t.Fatalf("reply %d: whole %+v at %d, split %+v at %d", i, whole[i], wEnds[i], split[i], sEnds[i])
			}
			total += whole[i].Bytes
		}
		if len(wEnds) > 0 && total != int64(wEnds[len(wEnds)-1]) {
			t.Fatalf("replies are %d bytes, end at %d", total, wEnds[len(wEnds)-1])
		}
	})
}
