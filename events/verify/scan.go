package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
)

// scanFields reads id, type, sid, ei, time and the chain members (prev,
// signer, seal) from the top level of one JSON object without decoding the
// rest: most of an event is its statement and parameters, which the
// checker never needs. It is ours because a full decode cost the check ten
// times as much per event. Time and Signer are slices of data.
func scanFields(data []byte) (f fields, err error) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return f, errors.New("not a JSON object")
	}
	i++
	for {
		i = skipSpace(data, i)
		if i < len(data) && data[i] == '}' {
			return f, nil
		}
		if i >= len(data) || data[i] != '"' {
			return f, errors.New("expected a key")
		}
		kEnd, esc, err := stringEnd(data, i)
		if err != nil {
			return f, err
		}
		key := data[i+1 : kEnd-1]
		i = skipSpace(data, kEnd)
		if i >= len(data) || data[i] != ':' {
			return f, errors.New("expected ':'")
		}
		i = skipSpace(data, i+1)
		vEnd, err := valueEnd(data, i)
		if err != nil {
			return f, err
		}
		val := data[i:vEnd]
		if !esc {
			switch string(key) {
			case "id", "type", "sid":
				s, err := str(val)
				if err != nil {
					return f, err
				}
				switch string(key) {
				case "id":
					f.ID = s
				case "type":
					f.Type = s
				default:
					f.SID = s
				}
			case "ei":
				n, err := strconv.ParseUint(string(val), 10, 64)
				if err != nil {
					return f, errors.New("ei is not a non-negative integer")
				}
				f.EI = &n
			case "prev":
				// Hashes are unpadded base64 with no escapes: decoded here
				// so the chain is compared as 32 bytes, not as strings.
				if len(val) < 2 || val[0] != '"' {
					return f, errors.New("prev is not a string")
				}
				in := val[1 : len(val)-1]
				if len(in) != base64.RawStdEncoding.EncodedLen(len(f.Prev)) {
					f.PrevBad = true
				} else if n, err := base64.RawStdEncoding.Decode(f.Prev[:], in); err != nil || n != len(f.Prev) {
					f.PrevBad = true
				}
				f.HasPrev = true
			case "time", "signer":
				if len(val) < 2 || val[0] != '"' {
					return f, errors.New(string(key) + " is not a string")
				}
				if key[0] == 't' {
					f.Time = val[1 : len(val)-1]
				} else {
					f.Signer = val[1 : len(val)-1]
				}
			case "seal":
				f.HasSeal = true
			case "success":
				f.Failed = string(val) == "false"
			}
		}
		i = skipSpace(data, vEnd)
		if i < len(data) && data[i] == ',' {
			i++
			continue
		}
		if i < len(data) && data[i] == '}' {
			return f, nil
		}
		return f, errors.New("expected ',' or '}'")
	}
}

// str is a JSON string's value; escapes are rare in ids and types.
func str(val []byte) (string, error) {
	if len(val) < 2 || val[0] != '"' {
		return "", errors.New("expected a string")
	}
	inner := val[1 : len(val)-1]
	for _, c := range inner {
		if c == '\\' {
			var s string
			err := json.Unmarshal(val, &s)
			return s, err
		}
	}
	return string(inner), nil
}

func skipSpace(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// stringEnd is the index after the string starting at d[i] ('"'), and
// whether it holds an escape. Statements make most of an event's bytes:
// the closing quote is looked for with IndexByte, and the byte loop runs
// only over a string that holds an escape.
func stringEnd(d []byte, i int) (int, bool, error) {
	k := bytes.IndexByte(d[i+1:], '"')
	if k < 0 {
		return 0, false, errors.New("unterminated string")
	}
	if bytes.IndexByte(d[i+1:i+1+k], '\\') < 0 {
		return i + k + 2, false, nil
	}
	for j := i + 1; j < len(d); j++ {
		switch d[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true, nil
		}
	}
	return 0, false, errors.New("unterminated string")
}

// valueEnd is the index after the value starting at d[i].
func valueEnd(d []byte, i int) (int, error) {
	if i >= len(d) {
		return 0, errors.New("missing value")
	}
	switch d[i] {
	case '"':
		e, _, err := stringEnd(d, i)
		return e, err
	case '{', '[':
		depth := 0
		for j := i; j < len(d); j++ {
			switch d[j] {
			case '"':
				e, _, err := stringEnd(d, j)
				if err != nil {
					return 0, err
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errors.New("unterminated object or array")
	}
	j := i
	for j < len(d) && d[j] != ',' && d[j] != '}' && d[j] != ']' && d[j] != ' ' && d[j] != '\n' && d[j] != '\t' && d[j] != '\r' {
		j++
	}
	if j == i {
		return 0, errors.New("missing value")
	}
	return j, nil
}
