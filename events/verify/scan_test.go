package verify

import (
	"bytes"
	"encoding/base64"
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
		`{"id":"x","type":"db.session.end","time":"2026-01-01T00:00:00Z","sid":"s","ei":2,"prev":"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU","signer":"MIIB","seal":"MEUC"}`,
		`{"id":"x","prev":"not base64!"}`,
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
		// time and signer are taken raw: equal to the decoded string
		// whenever it holds no escape.
		for k, v := range map[string][]byte{"time": got.Time, "signer": got.Signer} {
			var want string
			if raw, ok := keys[k]; ok && json.Unmarshal(raw, &want) == nil && !bytes.ContainsRune(raw, '\\') && want != string(v) {
				t.Fatalf("scan %s %q, encoding/json %q", k, v, want)
			}
		}
		var prev string
		if raw, ok := keys["prev"]; ok && json.Unmarshal(raw, &prev) == nil && !bytes.ContainsRune(raw, '\\') {
			sum, err := base64.RawStdEncoding.DecodeString(prev)
			if ok := err == nil && len(sum) == len(got.Prev); got.PrevBad == ok || ok && !bytes.Equal(sum, got.Prev[:]) {
				t.Fatalf("scan prev %x (bad %v), encoding/json %q", got.Prev, got.PrevBad, prev)
			}
		}
		if _, ok := keys["seal"]; ok != got.HasSeal {
			t.Fatalf("scan seal %v, encoding/json %v", got.HasSeal, ok)
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
