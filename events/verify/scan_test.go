package verify

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzScanFields checks the scanner against encoding/json: on every valid
// object with distinct keys it reads the same id, type, sid and ei, and it
// never panics on anything.
func FuzzScanFields(f *testing.F) {
	for _, s := range []string{
		`{"id":"01J","type":"db.session.query","sid":"s1","ei":3,"db_query":"select '\"}'"}`,
		`{"db_query_parameters":["a",{"b":[1,2]}],"id":"x","type":"t"}`,
		` { "id" : "a\u0041" , "ei" : 0 } `,
		`{"id":"x","type":"t","sid":"s","ei":18446744073709551615}`,
		`{"a":null,"b":true,"c":-1.5e3,"id":"y","type":"z"}`,
		`{"id":`, `[]`, `{"ei":-1}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := scanFields(data)
		var keys map[string]json.RawMessage
		if err != nil || !utf8.Valid(data) || json.Unmarshal(data, &keys) != nil {
			return // encoding/json replaces invalid bytes; ids never hold them
		}
		if len(keys) != countKeys(data) {
			return // a repeated key: the two may keep different copies
		}
		for k, v := range map[string]string{"id": got.ID, "type": got.Type, "sid": got.SID} {
			var want string
			if raw, ok := keys[k]; ok && json.Unmarshal(raw, &want) == nil && want != v {
				t.Fatalf("scan %s %q, encoding/json %q", k, v, want)
			}
		}
		var ei uint64
		if raw, ok := keys["ei"]; ok && json.Unmarshal(raw, &ei) == nil && (got.EI == nil || *got.EI != ei) {
			t.Fatalf("scan ei %v, encoding/json %d", got.EI, ei)
		}
	})
}

// countKeys counts the top-level keys the scanner walks.
func countKeys(data []byte) int {
	n := 0
	d := json.NewDecoder(bytes.NewReader(data))
	if _, err := d.Token(); err != nil {
		return -1
	}
	for d.More() {
		if _, err := d.Token(); err != nil {
			return -1
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return -1
		}
		n++
	}
	return n
}
