package sessions

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// brief is what the index needs of most events: whose they are, their
// type and time, and a result's outcome. Reading it walks the event's top
// level once without decoding it: the index reads every event stored, and
// decoding each one whole cost several times more than the rest of its
// work. Starts and ends, and the first event met of a session, are
// decoded whole (sessionFields).
type brief struct {
	sid, typ, time []byte
	success, rows  []byte
}

var (
	keySID     = []byte("sid")
	keyType    = []byte("type")
	keyTime    = []byte("time")
	keySuccess = []byte("success")
	keyRows    = []byte("db_rows")
)

// scan reads b from an encoded event; false when ev is not a JSON object
// as far as the walk sees (the caller then skips it).
func (b *brief) scan(ev []byte) bool {
	*b = brief{}
	i := skipSpace(ev, 0)
	if i >= len(ev) || ev[i] != '{' {
		return false
	}
	i = skipSpace(ev, i+1)
	if i < len(ev) && ev[i] == '}' {
		return true
	}
	for i < len(ev) {
		if ev[i] != '"' {
			return false
		}
		end := stringEnd(ev, i)
		if end < 0 {
			return false
		}
		key := ev[i+1 : end-1]
		i = skipSpace(ev, end)
		if i >= len(ev) || ev[i] != ':' {
			return false
		}
		i = skipSpace(ev, i+1)
		vend := valueEnd(ev, i)
		if vend < 0 {
			return false
		}
		val := ev[i:vend]
		switch {
		case bytes.Equal(key, keySID):
			b.sid = val
		case bytes.Equal(key, keyType):
			b.typ = val
		case bytes.Equal(key, keyTime):
			b.time = val
		case bytes.Equal(key, keySuccess):
			b.success = val
		case bytes.Equal(key, keyRows):
			b.rows = val
		}
		i = skipSpace(ev, vend)
		if i >= len(ev) {
			return false
		}
		switch ev[i] {
		case '}':
			return skipSpace(ev, i+1) == len(ev)
		case ',':
			i = skipSpace(ev, i+1)
		default:
			return false
		}
	}
	return false
}

// str is a string member's value; ok false when it is not a string.
func str(raw []byte) (s []byte, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return nil, false
	}
	s = raw[1 : len(raw)-1]
	if bytes.IndexByte(s, '\\') < 0 {
		return s, true
	}
	var u string
	if json.Unmarshal(raw, &u) != nil {
		return nil, false
	}
	return []byte(u), true
}

// fields fills what Session.apply reads of an event other than a start
// or an end from b.
func (b *brief) fields(r *sessionFields) bool {
	typ, ok := str(b.typ)
	if !ok {
		return false
	}
	// Of these events the summary reads only results by their type.
	if string(typ) == "db.session.result" {
		r.Type = "db.session.result"
	}
	if b.time != nil {
		ts, ok := str(b.time)
		if !ok {
			return false
		}
		t, err := time.Parse(time.RFC3339Nano, string(ts))
		if err != nil {
			return false
		}
		r.Time = t
	}
	switch string(b.success) {
	case "true":
		r.Success = &yes
	case "false":
		r.Success = &no
	}
	if b.rows != nil {
		n, err := strconv.ParseUint(string(b.rows), 10, 64)
		if err != nil {
			return false
		}
		r.Rows = n
	}
	return true
}

var yes, no = true, false

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd is the index after the string starting at b[i] (a quote), -1
// when it does not end.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// valueEnd is the index after the value starting at b[i], -1 when it does
// not end.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := stringEnd(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	if j == i {
		return -1
	}
	return j
}
