package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestTruncateEvent(t *testing.T) {
	many := make([]string, 5000)
	for i := range many {
		many[i] = "p"
	}
	ev := map[string]any{
		"id": "01ID", "type": "db.session.query", "sid": strings.Repeat("s", 50),
		"db_query":            strings.Repeat("é", 3000), // 6000 bytes, cut on a rune boundary
		"db_query_parameters": many,                      // many small elements
		"db_rows":             7,
		"note":                "short",
	}
	data, _ := json.Marshal(ev)
	out, full, err := truncateEvent(data, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) > 2048 {
		t.Fatalf("%d bytes, limit 2048", len(out))
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("not JSON: %v: %s", err, out)
	}
	q := got["db_query"].(string)
	if !utf8.ValidString(q) || !strings.HasPrefix(ev["db_query"].(string), q) || got["db_query_truncated"] != true {
		t.Fatalf("db_query %q", q)
	}
	if ps := got["db_query_parameters"].([]any); len(ps) == 0 || len(ps) >= len(many) || got["db_query_parameters_truncated"] != true {
		t.Fatalf("parameters kept: %d", len(ps))
	}
	if got["sid"] != ev["sid"] || got["note"] != "short" || got["db_rows"] != 7.0 || got["id"] != "01ID" {
		t.Fatalf("other fields changed: %v", got)
	}
	var back map[string]json.RawMessage
	if err := json.Unmarshal(full, &back); err != nil {
		t.Fatal(err)
	}
	var params []string
	if err := json.Unmarshal(back["db_query_parameters"], &params); err != nil || len(params) != len(many) {
		t.Fatalf("full parameters: %v %d", err, len(params))
	}

	// Envelope fields are never cut: an event whose envelope alone is too
	// big is an error, not a mangled event.
	huge, _ := json.Marshal(map[string]any{"id": strings.Repeat("i", 5000), "db_query": "x"})
	if _, _, err := truncateEvent(huge, 2048); err == nil || !strings.Contains(err.Error(), "after cutting every large field") {
		t.Fatalf("want a clear error, got %v", err)
	}
	if _, _, err := truncateEvent([]byte(`[1,2]`), 2048); err == nil || !strings.Contains(err.Error(), "not a JSON object") {
		t.Fatalf("array: %v", err)
	}
}

func FuzzTruncateEvent(f *testing.F) {
	f.Add(`{"id":"x","db_query":"`+strings.Repeat("a", 3000)+`","db_query_parameters":["`+strings.Repeat("b", 2000)+`",1,null]}`, 1100)
	f.Add(`{"id":"x","a":"\u00e9\ud83c\udf89`+strings.Repeat("z", 2000)+`"}`, 1024)
	f.Add(`{}`, 1024)
	f.Add(`{"a":[`+strings.Repeat(`"q",`, 600)+`"q"]}`, 1024)
	f.Fuzz(func(t *testing.T, data string, limit int) {
		if limit < 1024 || limit > 1<<20 || !json.Valid([]byte(data)) {
			return
		}
		stuck := time.AfterFunc(5*time.Second, func() { panic(fmt.Sprintf("truncateEvent(%q, %d) takes over 5s", data, limit)) })
		out, full, err := truncateEvent([]byte(data), limit)
		stuck.Stop()
		if err != nil {
			return
		}
		if len(data) > limit && len(out) > limit {
			t.Fatalf("%d bytes, limit %d", len(out), limit)
		}
		if !json.Valid(out) || !json.Valid(full) {
			t.Fatalf("invalid JSON: %s / %s", out, full)
		}
		var in, got, kept map[string]json.RawMessage
		if json.Unmarshal([]byte(data), &in) != nil {
			return
		}
		_ = json.Unmarshal(out, &got)
		_ = json.Unmarshal(full, &kept)
		for k, v := range in {
			if string(got[k+TruncatedSuffix]) == "true" {
				if string(kept[k]) != string(v) {
					t.Fatalf("full value of %s not kept", k)
				}
			} else if string(got[k]) != string(v) && !strings.HasSuffix(k, TruncatedSuffix) {
				t.Fatalf("field %s changed without being marked", k)
			}
		}
	})
}
