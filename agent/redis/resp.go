package redis

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/tollgate-db/tollgate/agent"
)

// Limits bound what one client command may be. The defaults are Redis's
// own (proto-max-bulk-len, the multibulk length limit and
// PROTO_INLINE_MAX_SIZE), so that the agent refuses nothing Redis would
// take; MaxCommand bounds the whole command, which the agent holds in
// memory until its event is stored.
type Limits struct {
	MaxCommand int
	MaxArgs    int
	MaxBulk    int
	MaxInline  int
}

// Default limits.
const (
	DefaultMaxCommand = 512 << 20
	DefaultMaxArgs    = 1 << 20
	DefaultMaxBulk    = 512 << 20
	DefaultMaxInline  = 64 << 10
)

func (l Limits) withDefaults() Limits {
	agent.SetDefault(&l.MaxCommand, DefaultMaxCommand)
	agent.SetDefault(&l.MaxArgs, DefaultMaxArgs)
	agent.SetDefault(&l.MaxBulk, DefaultMaxBulk)
	agent.SetDefault(&l.MaxInline, DefaultMaxInline)
	return l
}

// ProtocolError is client input that is not a RESP command. Its message
// says what was wrong in Redis's words ("Protocol error: ...").
type ProtocolError struct {
	Reason string
	// Offset is where in the command the problem was found.
	Offset int
}

func (e *ProtocolError) Error() string { return "Protocol error: " + e.Reason }

func protoErr(off int, format string, a ...any) *ProtocolError {
	return &ProtocolError{Reason: fmt.Sprintf(format, a...), Offset: off}
}

// Command is one client command: its arguments alias the buffer it was
// parsed from (inline commands' unquoted arguments are copies).
type Command struct {
	Args   [][]byte
	Inline bool
}

// ParseCommand parses the command at the start of b: an array of bulk
// strings, as every client library sends, or an inline command (a line of
// words, as typed into telnet). It returns the command and its size in
// bytes; with an incomplete command, size 0 and need, the number of bytes
// the command needs at least (a lower bound while lengths are unknown). An
// empty inline line is a command with no arguments, which Redis ignores.
// Anything else is a *ProtocolError: the agent forwards nothing of it.
func ParseCommand(b []byte, lim Limits) (cmd Command, size, need int, err error) {
	lim = lim.withDefaults()
	if len(b) == 0 {
		return Command{}, 0, 1, nil
	}
	if b[0] != '*' {
		return parseInline(b, lim)
	}
	n, off, ok, perr := readInt(b, 1, "multibulk length")
	if perr != nil {
		return Command{}, 0, 0, perr
	}
	if !ok {
		return Command{}, 0, len(b) + 1, nil
	}
	// Redis ignores *0 and *-1; a client that sends them has lost track
	// of the protocol, so the agent takes them as the error they are.
	if n <= 0 || n > int64(lim.MaxArgs) {
		return Command{}, 0, 0, protoErr(1, "invalid multibulk length %d (1 to %d arguments)", n, lim.MaxArgs)
	}
	args := make([][]byte, 0, min(n, 64))
	for i := int64(0); i < n; i++ {
		if off >= len(b) {
			return Command{}, 0, off + 1, nil
		}
		if b[off] != '$' {
			return Command{}, 0, 0, protoErr(off, "expected '$', got %s in argument %d of %d", quoteByte(b[off]), i+1, n)
		}
		l, next, ok, perr := readInt(b, off+1, "bulk length")
		if perr != nil {
			return Command{}, 0, 0, perr
		}
		if !ok {
			return Command{}, 0, len(b) + 1, nil
		}
		if l < 0 || l > int64(lim.MaxBulk) {
			return Command{}, 0, 0, protoErr(off+1, "invalid bulk length %d in argument %d (0 to %d bytes)", l, i+1, lim.MaxBulk)
		}
		end := next + int(l)
		if end+2 > lim.MaxCommand {
			return Command{}, 0, 0, protoErr(off, "command of %d bytes or more is over the agent's limit of %d bytes", end+2, lim.MaxCommand)
		}
		if len(b) < end+2 {
			return Command{}, 0, end + 2, nil
		}
		if b[end] != '\r' || b[end+1] != '\n' {
			return Command{}, 0, 0, protoErr(end, "argument %d is not followed by CRLF after its %d bytes", i+1, l)
		}
		args = append(args, b[next:end])
		off = end + 2
	}
	return Command{Args: args}, off, 0, nil
}

// readInt reads the decimal number from b[at:] up to CRLF. ok is false
// when the line is not complete yet.
func readInt(b []byte, at int, what string) (n int64, next int, ok bool, err *ProtocolError) {
	const maxDigits = 20
	i := bytes.IndexByte(b[at:min(len(b), at+maxDigits+2)], '\r')
	if i < 0 {
		if len(b)-at > maxDigits+1 {
			return 0, 0, false, protoErr(at, "invalid %s: no CRLF within %d bytes", what, maxDigits+2)
		}
		return 0, 0, false, nil
	}
	end := at + i
	if end+1 >= len(b) {
		return 0, 0, false, nil
	}
	if b[end+1] != '\n' {
		return 0, 0, false, protoErr(end, "invalid %s: CR not followed by LF", what)
	}
	v, perr := strconv.ParseInt(string(b[at:end]), 10, 64)
	if perr != nil || end == at || b[at] == '+' {
		return 0, 0, false, protoErr(at, "invalid %s %q", what, b[at:end])
	}
	return v, end + 2, true, nil
}

func quoteByte(c byte) string { return strconv.QuoteRune(rune(c)) }

// parseInline reads an inline command: one line (LF, optionally after CR)
// split into words as Redis splits it (sdssplitargs: spaces separate,
// "double quotes" take \n \r \t \b \a \\ \" and \xHH escapes, 'single
// quotes' take \', and a closing quote must be followed by a space).
func parseInline(b []byte, lim Limits) (Command, int, int, error) {
	nl := bytes.IndexByte(b[:min(len(b), lim.MaxInline+1)], '\n')
	if nl < 0 {
		if len(b) > lim.MaxInline {
			return Command{}, 0, 0, protoErr(0, "too big inline request (over %d bytes without a newline)", lim.MaxInline)
		}
		return Command{}, 0, len(b) + 1, nil
	}
	line := b[:nl]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	// Redis stops reading an inline command at a NUL byte: what follows
	// it would be left out of the command it runs, so the agent takes
	// the line for the error it is.
	if i := bytes.IndexByte(line, 0); i >= 0 {
		return Command{}, 0, 0, protoErr(i, "NUL byte at %d in an inline command", i)
	}
	args, perr := splitArgs(line)
	if perr != nil {
		return Command{}, 0, 0, perr
	}
	return Command{Args: args, Inline: true}, nl + 1, 0, nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f'
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func splitArgs(line []byte) ([][]byte, *ProtocolError) {
	var args [][]byte
	i := 0
	for {
		for i < len(line) && isSpace(line[i]) {
			i++
		}
		if i == len(line) {
			return args, nil
		}
		var cur []byte
		var quote byte // the quote of the argument being read, '"' or '\'', or 0
		start := i
	word:
		for {
			if i == len(line) {
				if quote != 0 {
					return nil, protoErr(start, "unbalanced quotes in request")
				}
				break
			}
			c := line[i]
			switch {
			case quote == '"' && c == '\\' && i+3 < len(line) && line[i+1] == 'x':
				h, ok1 := hexVal(line[i+2])
				l, ok2 := hexVal(line[i+3])
				if ok1 && ok2 {
					cur = append(cur, h<<4|l)
					i += 3
				} else {
					cur = append(cur, c)
				}
			case quote == '"' && c == '\\' && i+1 < len(line):
				i++
				switch line[i] {
				case 'n':
					cur = append(cur, '\n')
				case 'r':
					cur = append(cur, '\r')
				case 't':
					cur = append(cur, '\t')
				case 'b':
					cur = append(cur, '\b')
				case 'a':
					cur = append(cur, '\a')
				default:
					cur = append(cur, line[i])
				}
			case quote == '\'' && c == '\\' && i+1 < len(line) && line[i+1] == '\'':
				i++
				cur = append(cur, '\'')
			case quote != 0 && c == quote:
				if i+1 < len(line) && !isSpace(line[i+1]) {
					return nil, protoErr(i, "unbalanced quotes in request (a closing quote must be followed by a space)")
				}
				i++
				break word
			case quote != 0:
				cur = append(cur, c)
			default:
				switch c {
				case ' ', '\n', '\r', '\t':
					break word
				case '"', '\'':
					quote = c
				default:
					cur = append(cur, c)
				}
			}
			i++
		}
		if cur == nil {
			cur = []byte{}
		}
		args = append(args, cur)
	}
}

// AppendCommand encodes args as a RESP array of bulk strings: how the
// agent forwards an inline command, so that Redis runs exactly the
// arguments the event recorded whatever its own inline parsing would do.
func AppendCommand(dst []byte, args ...[]byte) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(len(args)), 10)
	dst = append(dst, '\r', '\n')
	for _, a := range args {
		dst = append(dst, '$')
		dst = strconv.AppendInt(dst, int64(len(a)), 10)
		dst = append(dst, '\r', '\n')
		dst = append(dst, a...)
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// AppendError encodes a RESP error reply. Line breaks in msg would end the
// reply early, so they become spaces.
func AppendError(dst []byte, msg string) []byte {
	dst = append(dst, '-')
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		dst = append(dst, c)
	}
	return append(dst, '\r', '\n')
}
