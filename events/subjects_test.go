package events

import (
	"encoding/json"
	"testing"
)

// A frame's event derives the subject it would have had as a message of
// its own, in and out of a session.
func TestEventSubjectOf(t *testing.T) {
	q := &Query{Session: Session{SID: "01HSESSION"}, Query: "SELECT 1"}
	u := &UserCreate{Name: "bob"}
	for _, ev := range []Event{q, u} {
		if err := Stamp(ev, "prod"); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		got, err := EventSubjectOf(b)
		if err != nil {
			t.Fatal(err)
		}
		if want := AuditSubject(ev); got != want {
			t.Fatalf("EventSubjectOf = %q, AuditSubject %q", got, want)
		}
	}
	if got := AuditSubject(u); got != "audit.prod._.user.create" {
		t.Fatalf("AuditSubject(user.create) = %q", got)
	}
	if _, err := EventSubjectOf([]byte(`{"id":"x"}`)); err == nil {
		t.Fatal("an event without cluster or type has a subject")
	}
}
