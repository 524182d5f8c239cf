package sessions

import (
	"encoding/json"
	"testing"
)

// The walk reads what encoding/json reads of every stored event.
func TestBriefScan(t *testing.T) {
	evs := append(sample(t), []byte(` { "sid" : "a\"b" , "x":{"sid":"nested","y":[1,{"time":"no"}]}, "type":"db.session.result","success":false,"db_rows":12 ,"time":"2026-01-02T03:04:05.123456789Z"} `))
	for _, ev := range evs {
		checkBrief(t, ev)
	}
	for _, bad := range []string{``, `[]`, `{"sid":"x"`, `{"sid":"x",}`, `{"sid" "x"}`, `{"sid":"x"} x`, `{"a":{"b":"}"}`} {
		var b brief
		if b.scan([]byte(bad)) {
			t.Errorf("scan(%q) accepted", bad)
		}
	}
}

func checkBrief(t *testing.T, ev []byte) {
	t.Helper()
	// The walk matches keys exactly, as the events are written (json
	// folds their case): the members of these exact names are the oracle.
	var members map[string]json.RawMessage
	werr := json.Unmarshal(ev, &members)
	exact := map[string]json.RawMessage{}
	for _, k := range []string{"sid", "type", "time", "success", "db_rows"} {
		if v, ok := members[k]; ok {
			exact[k] = v
		}
	}
	var want sessionFields
	if werr == nil {
		b, _ := json.Marshal(exact)
		werr = json.Unmarshal(b, &want)
	}
	var b brief
	if !b.scan(ev) {
		if werr == nil {
			t.Fatalf("scan(%q) refused a valid event", ev)
		}
		return
	}
	if werr != nil {
		return // not JSON, or members of other types: the index may read what it can
	}
	sid, _ := str(b.sid)
	if string(sid) != want.SID {
		t.Fatalf("%s: sid %q, want %q", ev, sid, want.SID)
	}
	var got sessionFields
	if !b.fields(&got) {
		return // json accepts a time or rows the walk does not: decoded whole then
	}
	if want.Type != "db.session.result" {
		want.Type = ""
	}
	if got.Type != want.Type || !got.Time.Equal(want.Time) || got.Rows != want.Rows ||
		(got.Success == nil) != (want.Success == nil) || got.Success != nil && *got.Success != *want.Success {
		t.Fatalf("%s: %+v, want %+v", ev, got, want)
	}
}

func FuzzBriefScan(f *testing.F) {
	for _, ev := range sample(f) {
		f.Add(ev)
	}
	f.Add([]byte(`{"sid":"\u0041","type":"db.session.result","db_rows":1e3,"time":"2026-01-02T03:04:05Z"}`))
	f.Fuzz(func(t *testing.T, ev []byte) { checkBrief(t, ev) })
}
