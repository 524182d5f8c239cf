package redis

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"
)

// redactedArg stands in for a secret argument in an event.
const redactedArg = "<redacted>"

// secretArgs returns which arguments of a command are secrets: passwords
// of AUTH, HELLO ... AUTH, MIGRATE ... AUTH/AUTH2, ACL SETUSER's >pass,
// <pass, #hash and !hash rules, and CONFIG SET of requirepass and
// masterauth. They never enter an event.
func secretArgs(name string, args [][]byte) []bool {
	var secret []bool
	mark := func(i int) {
		if i >= len(args) {
			return
		}
		if secret == nil {
			secret = make([]bool, len(args))
		}
		secret[i] = true
	}
	switch name {
	case "AUTH":
		// AUTH password, or AUTH username password.
		mark(len(args) - 1)
		if len(args) == 2 {
			mark(1)
		}
	case "HELLO":
		for i := 2; i < len(args); i++ {
			if strings.EqualFold(string(args[i]), "AUTH") {
				mark(i + 2)
				i += 2
			}
		}
	case "MIGRATE":
		for i := 6; i < len(args); i++ {
			switch strings.ToUpper(string(args[i])) {
			case "AUTH":
				mark(i + 1)
				i++
			case "AUTH2":
				mark(i + 2)
				i += 2
			case "KEYS":
				i = len(args)
			}
		}
	case "ACL":
		if len(args) > 1 && strings.EqualFold(string(args[1]), "SETUSER") {
			for i := 3; i < len(args); i++ {
				if a := args[i]; len(a) > 0 && (a[0] == '>' || a[0] == '<' || a[0] == '#' || a[0] == '!') {
					mark(i)
				}
			}
		}
	case "CONFIG":
		if len(args) > 1 && strings.EqualFold(string(args[1]), "SET") {
			for i := 2; i+1 < len(args); i += 2 {
				switch strings.ToLower(string(args[i])) {
				case "requirepass", "masterauth", "masteruser", "tls-key-file-pass", "tls-client-key-file-pass":
					mark(i + 1)
				}
			}
		}
	}
	return secret
}

// render writes a command as redis-cli shows one: arguments separated by
// spaces, quoted when they hold spaces, quotes or bytes that are not
// printable UTF-8. Each argument is cut to maxArg bytes with a note of its
// full size, so one large value does not make an event that large; the
// whole command's event is further cut by the publisher if need be.
func render(args [][]byte, secret []bool, maxArg int) (text string, redacted bool) {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if secret != nil && secret[i] {
			b.WriteString(redactedArg)
			redacted = true
			continue
		}
		cut := a
		if len(cut) > maxArg {
			// Back off to a character start, at most 3 bytes: binary
			// values may hold no characters at all.
			n := maxArg
			for k := 0; k < 3 && n > 0 && !utf8.RuneStart(a[n]); k++ {
				n--
			}
			cut = a[:n]
		}
		writeArg(&b, cut)
		if len(cut) < len(a) {
			b.WriteString("...(")
			b.WriteString(strconv.Itoa(len(a)))
			b.WriteString(" bytes)")
		}
	}
	return b.String(), redacted
}

func writeArg(b *strings.Builder, a []byte) {
	plain := len(a) > 0 && utf8.Valid(a)
	if plain {
		for _, c := range a {
			if c <= ' ' || c == '"' || c == '\'' || c == '\\' || c == 0x7f {
				plain = false
				break
			}
		}
	}
	if plain {
		b.Write(a)
		return
	}
	b.WriteByte('"')
	for len(a) > 0 {
		r, size := utf8.DecodeRune(a)
		switch {
		case r == utf8.RuneError && size <= 1:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(a[0])>>4, 16))
			b.WriteString(strconv.FormatUint(uint64(a[0])&15, 16))
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < ' ' || r == 0x7f:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(r)>>4, 16))
			b.WriteString(strconv.FormatUint(uint64(r)&15, 16))
		default:
			b.Write(a[:size])
		}
		a = a[size:]
	}
	b.WriteByte('"')
}

// commandName is a command's name in upper case.
func commandName(args [][]byte) string {
	if len(args) == 0 {
		return ""
	}
	return string(bytes.ToUpper(args[0]))
}
