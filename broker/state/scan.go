package state

import (
	"errors"
	"strconv"
	"time"
	"unicode/utf8"
)

// Replay decodes every STATE event once per start, a million of them on a
// long-lived cluster, and encoding/json's reflection costs several
// microseconds per event. scanner reads the narrow JSON our own encoder
// writes for STATE events without reflection. It never decides anything on
// its own: whenever the input strays from that form (unknown or
// differently cased keys, nulls where a value is expected, surrogate
// escapes, invalid UTF-8, numbers in other notations, trailing data) it
// gives up with errFallback and decode hands the message to encoding/json,
// whose answer is the reference. FuzzDecode checks that both agree.
type scanner struct {
	b   []byte
	pos int
	in  *interner // may be nil
}

// interner keeps one copy of the strings that repeat from event to event
// (types, codes, cluster, actors, role names, hosts), so replay allocates
// less and the projection holds one copy of each. It is bounded: past
// maxInterned distinct strings, new ones are simply allocated. Not safe for
// concurrent use; each projection's delivery goroutine has its own.
type interner struct{ m map[string]string }

const maxInterned = 1 << 16

func newInterner() *interner { return &interner{m: make(map[string]string, 256)} }

func (in *interner) get(b []byte) string {
	if in == nil {
		return string(b)
	}
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(in.m) < maxInterned {
		in.m[s] = s
	}
	return s
}

var errFallback = errors.New("state: not in the fast decoder's form")

func (s *scanner) ws() {
	for s.pos < len(s.b) {
		switch s.b[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// next skips whitespace and returns the next byte without consuming it.
func (s *scanner) next() byte {
	s.ws()
	if s.pos >= len(s.b) {
		return 0
	}
	return s.b[s.pos]
}

func (s *scanner) expect(c byte) error {
	if s.next() != c {
		return errFallback
	}
	s.pos++
	return nil
}

// null consumes a null literal if one is next.
func (s *scanner) null() bool {
	if s.next() == 'n' && len(s.b)-s.pos >= 4 && string(s.b[s.pos:s.pos+4]) == "null" {
		s.pos += 4
		return true
	}
	return false
}

// rawString returns the bytes between the quotes of the next string and
// whether they hold escapes.
func (s *scanner) rawString() (raw []byte, escaped bool, err error) {
	if err := s.expect('"'); err != nil {
		return nil, false, err
	}
	start := s.pos
	ascii := true
	for {
		for s.pos < len(s.b) && !special[s.b[s.pos]] {
			s.pos++
		}
		if s.pos >= len(s.b) {
			return nil, false, errFallback
		}
		c := s.b[s.pos]
		switch {
		case c == '"':
			raw = s.b[start:s.pos]
			s.pos++
			if !ascii && !utf8.Valid(raw) {
				return nil, false, errFallback
			}
			return raw, escaped, nil
		case c == '\\':
			escaped = true
			s.pos += 2
		case c < 0x20:
			return nil, false, errFallback
		default:
			ascii = false
			s.pos++
		}
	}
}

// special marks the bytes rawString must look at: the closing quote,
// escapes, control characters (invalid in JSON strings) and non-ASCII
// (to be checked as UTF-8).
var special = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80
	}
	return t
}()

func (s *scanner) str() (string, error) {
	raw, escaped, err := s.rawString()
	if err != nil {
		return "", err
	}
	if !escaped {
		return string(raw), nil
	}
	return unescape(raw)
}

// istr is str for values that repeat across events: interned.
func (s *scanner) istr() (string, error) {
	raw, escaped, err := s.rawString()
	if err != nil {
		return "", err
	}
	if !escaped {
		return s.in.get(raw), nil
	}
	return unescape(raw)
}

func unescape(raw []byte) (string, error) {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(raw) {
			return "", errFallback
		}
		switch raw[i] {
		case '"', '\\', '/':
			out = append(out, raw[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+4 >= len(raw) {
				return "", errFallback
			}
			v, err := strconv.ParseUint(string(raw[i+1:i+5]), 16, 32)
			if err != nil || v >= 0xD800 && v < 0xE000 {
				return "", errFallback // surrogates are encoding/json's business
			}
			out = utf8.AppendRune(out, rune(v))
			i += 4
		default:
			return "", errFallback
		}
	}
	return string(out), nil
}

func (s *scanner) boolean() (bool, error) {
	c := s.next()
	switch {
	case c == 't' && len(s.b)-s.pos >= 4 && string(s.b[s.pos:s.pos+4]) == "true":
		s.pos += 4
		return true, nil
	case c == 'f' && len(s.b)-s.pos >= 5 && string(s.b[s.pos:s.pos+5]) == "false":
		s.pos += 5
		return false, nil
	}
	return false, errFallback
}

// int64 reads an integer written as plain digits.
func (s *scanner) int64() (int64, error) {
	s.ws()
	start := s.pos
	if s.pos < len(s.b) && s.b[s.pos] == '-' {
		s.pos++
	}
	for s.pos < len(s.b) && s.b[s.pos] >= '0' && s.b[s.pos] <= '9' {
		s.pos++
	}
	if s.pos < len(s.b) {
		switch s.b[s.pos] {
		case '.', 'e', 'E':
			return 0, errFallback
		}
	}
	digits := s.b[start:s.pos]
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) > 1 && digits[0] == '0' {
		return 0, errFallback // JSON has no leading zeros
	}
	v, err := strconv.ParseInt(string(s.b[start:s.pos]), 10, 64)
	if err != nil {
		return 0, errFallback
	}
	return v, nil
}

// time reads a time as encoding/json would: time.Time's own UnmarshalJSON
// on the quoted value.
func (s *scanner) time(t *time.Time) error {
	s.ws()
	start := s.pos
	_, escaped, err := s.rawString()
	if err != nil || escaped {
		return errFallback
	}
	if err := t.UnmarshalJSON(s.b[start:s.pos]); err != nil {
		return errFallback
	}
	return nil
}

func (s *scanner) strings() ([]string, error) {
	if s.null() {
		return nil, nil
	}
	if err := s.expect('['); err != nil {
		return nil, err
	}
	out := []string{}
	if s.next() == ']' {
		s.pos++
		return out, nil
	}
	for {
		v, err := s.istr()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		switch s.next() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return out, nil
		default:
			return nil, errFallback
		}
	}
}

// object calls fn for each key of the next object, the scanner positioned
// at the key's value. Keys with escapes are left to encoding/json.
func (s *scanner) object(fn func(key []byte) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.next() == '}' {
		s.pos++
		return nil
	}
	for {
		key, escaped, err := s.rawString()
		if err != nil || escaped {
			return errFallback
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := fn(key); err != nil {
			return err
		}
		switch s.next() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return errFallback
		}
	}
}

// stringMap decodes into m, merging like encoding/json does when a key is
// repeated.
func (s *scanner) stringMap(m *map[string]string) error {
	if s.null() {
		*m = nil
		return nil
	}
	if *m == nil {
		*m = map[string]string{}
	}
	return s.object(func(k []byte) error {
		v, err := s.str()
		if err != nil {
			return err
		}
		(*m)[s.in.get(k)] = v
		return nil
	})
}

func (s *scanner) traits(m *map[string][]string) error {
	if s.null() {
		*m = nil
		return nil
	}
	if *m == nil {
		*m = map[string][]string{}
	}
	return s.object(func(k []byte) error {
		v, err := s.strings()
		if err != nil {
			return err
		}
		(*m)[s.in.get(k)] = v
		return nil
	})
}

// end checks that nothing but whitespace follows.
func (s *scanner) end() error {
	s.ws()
	if s.pos != len(s.b) {
		return errFallback
	}
	return nil
}
