package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
)

// TruncatedSuffix is appended to the name of a field whose value was cut to
// fit the event into one message: db_query_truncated: true says that
// db_query holds a prefix and the full value is in LargeFieldsBucket.
const TruncatedSuffix = "_truncated"

// truncateKeep is how much of a cut string an event keeps: enough to read
// what a statement was, small enough that a few cut fields fit any limit.
const truncateKeep = 1024

// protectedFields are never cut: they identify the event and its session,
// and consumers route, deduplicate and prove completeness with them.
var protectedFields = map[string]bool{
	"id": true, "type": true, "code": true, "time": true, "cluster": true,
	"user": true, "roles": true, "sid": true, "ei": true, "prev": true,
	"success": true, "error": true,
	"db_service": true, "db_protocol": true, "db_uri": true, "db_user": true, "db_name": true,
}

type jsonField struct {
	key string
	raw json.RawMessage
	cut bool
}

// truncateEvent cuts the largest string fields of the encoded event data
// (top-level strings and the string elements of top-level arrays) until it
// is at most limit bytes. It returns the new event and the full values of
// the cut fields as one JSON object, field name to original value.
func truncateEvent(data []byte, limit int) (event, full []byte, err error) {
	fields, err := splitObject(data)
	if err != nil {
		return nil, nil, fmt.Errorf("events: truncate: %w", err)
	}
	keep := min(truncateKeep, limit/16)
	have := map[string]bool{}
	for _, f := range fields {
		have[f.key] = true
	}
	order := make([]int, 0, len(fields))
	for i, f := range fields {
		if protectedFields[f.key] || have[f.key+TruncatedSuffix] || len(f.raw) <= keep {
			continue
		}
		if f.raw[0] == '"' || f.raw[0] == '[' {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(a, b int) bool { return len(fields[order[a]].raw) > len(fields[order[b]].raw) })

	size := len(data)
	var fullBuf bytes.Buffer
	fullBuf.WriteByte('{')
	for _, i := range order {
		if size <= limit {
			break
		}
		f := &fields[i]
		cut, ok := cutValue(f.raw, keep)
		if !ok {
			continue
		}
		grow := len(cut) - len(f.raw) + len(`,"`+f.key+TruncatedSuffix+`":true`)
		if grow >= 0 {
			continue
		}
		if fullBuf.Len() > 1 {
			fullBuf.WriteByte(',')
		}
		writeKey(&fullBuf, f.key)
		fullBuf.Write(f.raw)
		f.raw, f.cut = cut, true
		size += grow
	}
	fullBuf.WriteByte('}')
	if size > limit {
		return nil, nil, fmt.Errorf("events: event is %d bytes after cutting every large field, more than the %d bytes a message may hold", size, limit)
	}

	out := make([]byte, 0, size)
	out = append(out, '{')
	for i, f := range fields {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendKey(out, f.key)
		out = append(out, f.raw...)
		if f.cut {
			out = append(out, ',')
			out = appendKey(out, f.key+TruncatedSuffix)
			out = append(out, "true"...)
		}
	}
	out = append(out, '}')
	return out, fullBuf.Bytes(), nil
}

// splitObject returns the top-level fields of a JSON object in order.
func splitObject(data []byte) ([]jsonField, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("event is not a JSON object")
	}
	var fields []jsonField
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("field %q: %w", key, err)
		}
		fields = append(fields, jsonField{key: key, raw: raw})
	}
	return fields, nil
}

// cutValue returns raw with its string, or the strings in its array, cut to
// keep bytes; ok is false when there is nothing to cut.
func cutValue(raw json.RawMessage, keep int) (json.RawMessage, bool) {
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil || len(s) <= keep {
			return nil, false
		}
		b, _ := json.Marshal(prefix(s, keep))
		return b, true
	case '[':
		var elems []json.RawMessage
		if json.Unmarshal(raw, &elems) != nil {
			return nil, false
		}
		changed := false
		for i, e := range elems {
			if len(e) == 0 || e[0] != '"' {
				continue
			}
			var s string
			if json.Unmarshal(e, &s) != nil || len(s) <= keep {
				continue
			}
			elems[i], _ = json.Marshal(prefix(s, keep))
			changed = true
		}
		// Many small elements: keep the first ones, up to a few cut
		// strings' worth.
		size := 2
		for i, e := range elems {
			if size += len(e) + 1; size > 4*keep && i > 0 {
				elems, changed = elems[:i], true
				break
			}
		}
		if !changed {
			return nil, false
		}
		b, _ := json.Marshal(elems)
		return b, true
	}
	return nil, false
}

// prefix cuts s to at most n bytes without splitting a UTF-8 sequence.
func prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func writeKey(b *bytes.Buffer, k string) {
	b.Write(appendKey(nil, k))
}

func appendKey(b []byte, k string) []byte {
	q, _ := json.Marshal(k)
	b = append(b, q...)
	return append(b, ':')
}

// LargeFields returns the full values of the fields that were cut from the
// event with the given id (those with a <field>_truncated: true beside
// them), keyed by field name.
func LargeFields(ctx context.Context, js jetstream.JetStream, eventID string) (map[string]json.RawMessage, error) {
	obs, err := js.ObjectStore(ctx, LargeFieldsBucket)
	if err != nil {
		return nil, fmt.Errorf("events: large fields of %s: object store %s: %w", eventID, LargeFieldsBucket, err)
	}
	b, err := obs.GetBytes(ctx, eventID)
	if err != nil {
		return nil, fmt.Errorf("events: large fields of %s: %w", eventID, err)
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("events: large fields of %s: stored value is not a JSON object: %w", eventID, err)
	}
	return out, nil
}
