package verify

import (
	"bytes"
	"encoding/json"
	"errors"
)

// ExportedEvent returns the event an exporter's line carries, as the
// stream stored it, so its hash and seal can be checked: a native line is
// the event itself; a CloudEvent carries it verbatim as its data member
// (taken as the raw bytes, never re-encoded); an OCSF record carries the
// original bytes as a JSON string in unmapped.tollgate_event.
func ExportedEvent(line []byte) ([]byte, error) {
	line = bytes.TrimSpace(line)
	switch {
	case bytes.HasPrefix(line, []byte(`{"specversion":`)):
		data, ok, err := topMember(line, "data")
		if err != nil || !ok {
			return nil, errors.Join(errors.New("CloudEvent without a data member"), err)
		}
		return data, nil
	case bytes.HasPrefix(line, []byte(`{"id":`)):
		return line, nil
	}
	unmapped, ok, err := topMember(line, "unmapped")
	if err != nil {
		return nil, err
	}
	if !ok {
		// Not OCSF: a native event whose members come in another order.
		return line, nil
	}
	raw, ok, err := topMember(unmapped, "tollgate_event")
	if err != nil || !ok {
		return nil, errors.Join(errors.New("OCSF record without unmapped.tollgate_event: the original event is not in the record"), err)
	}
	var ev string
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, errors.New("OCSF unmapped.tollgate_event is not a JSON string")
	}
	return []byte(ev), nil
}

// topMember returns the raw value of the top-level member key of a JSON
// object.
func topMember(data []byte, key string) ([]byte, bool, error) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, false, errors.New("not a JSON object")
	}
	i++
	for {
		i = skipSpace(data, i)
		if i < len(data) && data[i] == '}' {
			return nil, false, nil
		}
		if i >= len(data) || data[i] != '"' {
			return nil, false, errors.New("expected a key")
		}
		kEnd, esc, err := stringEnd(data, i)
		if err != nil {
			return nil, false, err
		}
		k := data[i+1 : kEnd-1]
		i = skipSpace(data, kEnd)
		if i >= len(data) || data[i] != ':' {
			return nil, false, errors.New("expected ':'")
		}
		i = skipSpace(data, i+1)
		vEnd, err := valueEnd(data, i)
		if err != nil {
			return nil, false, err
		}
		if !esc && string(k) == key {
			return data[i:vEnd], true, nil
		}
		i = skipSpace(data, vEnd)
		if i < len(data) && data[i] == ',' {
			i++
			continue
		}
		if i < len(data) && data[i] == '}' {
			return nil, false, nil
		}
		return nil, false, errors.New("expected ',' or '}'")
	}
}
