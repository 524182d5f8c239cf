package format

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Envelope is what the exporters need to know of an event without decoding
// all of it: identity, type, time and the fields filters and sinks use.
type Envelope struct {
	ID      string
	Type    string
	Code    string
	Time    time.Time
	Cluster string
	User    string
	// SID is the session id of session events.
	SID string
	// DBService, DBName and DBUser are set on database session events.
	DBService string
	DBName    string
	DBUser    string
}

// Severity is the last letter of the code: 'I', 'W' or 'E' (0 when the code
// is malformed).
func (e *Envelope) Severity() byte {
	if len(e.Code) == 0 {
		return 0
	}
	switch c := e.Code[len(e.Code)-1]; c {
	case 'I', 'W', 'E':
		return c
	}
	return 0
}

// ErrNotEvent says the bytes are not an event the exporters can read.
var ErrNotEvent = errors.New("not a Tollgate event")

// maxDepth bounds nesting so a hostile document cannot exhaust the stack.
const maxDepth = 64

// Scan reads the envelope of one encoded event. It checks that b is one
// well-formed JSON object (as strictly as encoding/json does, so whatever
// passes can be embedded verbatim in another JSON document) and that it
// has an id, a type and a time; a later duplicate key wins, as it does for
// encoding/json. It reads the top level only, without decoding the rest.
func Scan(b []byte) (Envelope, error) {
	var e Envelope
	s := scanner{b: b}
	s.space()
	if !s.eat('{') {
		return e, fmt.Errorf("%w: not a JSON object", ErrNotEvent)
	}
	var timeRaw []byte
	s.space()
	if !s.eat('}') {
		for {
			s.space()
			ks, ke, kesc, err := s.str()
			if err != nil {
				return e, err
			}
			s.space()
			if !s.eat(':') {
				return e, s.fail("want ':' after a key")
			}
			s.space()
			var dst *string
			isTime := false
			key := b[ks:ke]
			if kesc {
				key = []byte(unquote(b[ks-1 : ke+1]))
			}
			{
				switch string(key) {
				case "id":
					dst = &e.ID
				case "type":
					dst = &e.Type
				case "code":
					dst = &e.Code
				case "time":
					isTime = true
				case "cluster":
					dst = &e.Cluster
				case "user":
					dst = &e.User
				case "sid":
					dst = &e.SID
				case "db_service":
					dst = &e.DBService
				case "db_name":
					dst = &e.DBName
				case "db_user":
					dst = &e.DBUser
				}
			}
			if (dst != nil || isTime) && s.peek() == '"' {
				vs, ve, vesc, err := s.str()
				if err != nil {
					return e, err
				}
				v := b[vs:ve]
				if isTime {
					timeRaw = nil
					if !vesc {
						timeRaw = v
					}
				} else if vesc {
					*dst = unquote(b[vs-1 : ve+1])
				} else {
					*dst = string(v)
				}
			} else {
				if dst != nil {
					*dst = ""
				}
				if isTime {
					timeRaw = nil
				}
				if err := s.value(0); err != nil {
					return e, err
				}
			}
			s.space()
			if s.eat(',') {
				continue
			}
			if s.eat('}') {
				break
			}
			return e, s.fail("want ',' or '}' in an object")
		}
	}
	s.space()
	if s.i != len(b) {
		return e, s.fail("data after the object")
	}
	if e.ID == "" || e.Type == "" {
		return e, fmt.Errorf("%w: no id or type", ErrNotEvent)
	}
	if timeRaw == nil {
		return e, fmt.Errorf("%w: event %s has no time", ErrNotEvent, e.ID)
	}
	t, err := time.Parse(time.RFC3339Nano, string(timeRaw))
	if err != nil {
		return e, fmt.Errorf("%w: event %s: time %q is not RFC 3339", ErrNotEvent, e.ID, timeRaw)
	}
	e.Time = t
	return e, nil
}

func unquote(q []byte) string {
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return ""
	}
	return s
}

type scanner struct {
	b []byte
	i int
}

func (s *scanner) fail(what string) error {
	return fmt.Errorf("%w: malformed JSON at byte %d: %s", ErrNotEvent, s.i, what)
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// str reads a string and returns the bounds of its contents and whether it
// holds escapes.
func (s *scanner) str() (start, end int, escaped bool, err error) {
	if !s.eat('"') {
		return 0, 0, false, s.fail("want a string")
	}
	start = s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		if plain[c] {
			s.i++
			continue
		}
		switch {
		case c == '"':
			end = s.i
			s.i++
			return start, end, escaped, nil
		case c == '\\':
			escaped = true
			s.i++
			if s.i >= len(s.b) {
				return 0, 0, false, s.fail("unterminated escape")
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				if s.i+5 > len(s.b) {
					return 0, 0, false, s.fail("short \\u escape")
				}
				for _, h := range s.b[s.i+1 : s.i+5] {
					if !isHex(h) {
						return 0, 0, false, s.fail("bad \\u escape")
					}
				}
				s.i += 5
			default:
				return 0, 0, false, s.fail("bad escape")
			}
		case c < 0x20:
			return 0, 0, false, s.fail("control character in a string")
		case c < utf8.RuneSelf:
			s.i++
		default:
			// encoding/json accepts invalid UTF-8 and replaces it with
			// U+FFFD: such a string is decoded the slow way, like escapes.
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				escaped = true
			}
			s.i += n
		}
	}
	return 0, 0, false, s.fail("unterminated string")
}

// plain marks the bytes a string holds as they are: printable ASCII
// other than '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// value skips one JSON value.
func (s *scanner) value(depth int) error {
	if depth > maxDepth {
		return s.fail("nested too deeply")
	}
	switch c := s.peek(); {
	case c == '"':
		_, _, _, err := s.str()
		return err
	case c == '{':
		s.i++
		s.space()
		if s.eat('}') {
			return nil
		}
		for {
			s.space()
			if _, _, _, err := s.str(); err != nil {
				return err
			}
			s.space()
			if !s.eat(':') {
				return s.fail("want ':' after a key")
			}
			s.space()
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.space()
			if s.eat(',') {
				continue
			}
			if s.eat('}') {
				return nil
			}
			return s.fail("want ',' or '}' in an object")
		}
	case c == '[':
		s.i++
		s.space()
		if s.eat(']') {
			return nil
		}
		for {
			s.space()
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.space()
			if s.eat(',') {
				continue
			}
			if s.eat(']') {
				return nil
			}
			return s.fail("want ',' or ']' in an array")
		}
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.fail("want a value")
}

func (s *scanner) literal(w string) error {
	if len(s.b)-s.i < len(w) || string(s.b[s.i:s.i+len(w)]) != w {
		return s.fail("bad literal")
	}
	s.i += len(w)
	return nil
}

// number follows the JSON grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	s.eat('-')
	switch {
	case s.eat('0'):
	case s.peek() >= '1' && s.peek() <= '9':
		s.digits()
	default:
		return s.fail("bad number")
	}
	if s.eat('.') {
		if !s.digits() {
			return s.fail("bad fraction")
		}
	}
	if s.eat('e') || s.eat('E') {
		if !s.eat('+') {
			s.eat('-')
		}
		if !s.digits() {
			return s.fail("bad exponent")
		}
	}
	return nil
}

func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// appendString appends v as a JSON string.
func appendString(dst []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(v)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, v...)
	return append(dst, '"')
}
