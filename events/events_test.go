package events

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestStampFillsFromRegistry(t *testing.T) {
	ev := &Query{Session: Session{SID: "s1", EI: 0}, Query: "select 1"}
	if err := Stamp(ev, "c1"); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "db.session.query" || ev.Code != "TGDB002I" || ev.ID == "" || ev.Time.IsZero() || ev.Cluster != "c1" {
		t.Fatalf("envelope not stamped: %+v", ev.Envelope)
	}
	id := ev.ID
	if err := Stamp(ev, "c2"); err != nil || ev.ID != id || ev.Cluster != "c1" {
		t.Fatalf("re-stamping changed id or cluster: %+v", ev.Envelope)
	}
	if got := AuditSubject(ev); got != "audit.c1.s1.db.session.query" {
		t.Fatalf("subject %q", got)
	}
	b, _ := json.Marshal(ev)
	if !strings.Contains(string(b), `"ei":0`) || !strings.Contains(string(b), `"sid":"s1"`) {
		t.Fatalf("session fields missing: %s", b)
	}
}

func TestFailureCode(t *testing.T) {
	ok := &SessionStart{Status: Status{Success: true}}
	denied := &SessionStart{Status: Status{Success: false, Error: "db_user refused"}}
	if err := Stamp(ok, "c"); err != nil {
		t.Fatal(err)
	}
	if err := Stamp(denied, "c"); err != nil {
		t.Fatal(err)
	}
	if ok.Code != "TGDB000I" || denied.Code != "TGDB000W" {
		t.Fatalf("codes %s %s", ok.Code, denied.Code)
	}
}

func TestUnregisteredType(t *testing.T) {
	type stray struct{ Envelope }
	if err := Stamp(&stray{}, "c"); err == nil || !strings.Contains(err.Error(), "not a registered event type") {
		t.Fatalf("want registration error, got %v", err)
	}
}

func TestNonSessionSubject(t *testing.T) {
	ev := &Query{}
	_ = Stamp(ev, "c")
	if got := AuditSubject(ev); got != "audit.c._.db.session.query" {
		t.Fatalf("subject %q", got)
	}
}

func TestValidToken(t *testing.T) {
	for _, bad := range []string{"", "a.b", "a*", ">", "a b"} {
		if ValidToken(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := ValidToken("prod-eu_1"); err != nil {
		t.Error(err)
	}
}
