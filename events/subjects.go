package events

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Stream names and the subjects they hold (DESIGN.md §2.1).
const (
	// AuditStream is the data plane: every audit event.
	AuditStream = "AUDIT"
	// StateStream is the control plane: event-sourced aggregates.
	StateStream = "STATE"
	// AuditSubjects is the filter of AuditStream.
	AuditSubjects = "audit.>"
	// StateSubjects is the filter of StateStream.
	StateSubjects = "state.>"
	// NoSession stands in the session token of events outside a session.
	NoSession = "_"
	// HeaderStateSeq marks a copy in AuditStream of a StateStream event
	// (broker/trail) with the sequence of the original, so a reader of
	// both streams can join them or skip the copy.
	HeaderStateSeq = "Tollgate-State-Seq"
)

// AuditSubject is the subject an audit event is stored under:
// audit.<cluster>.<sid>.<type>, the type's dots becoming subject tokens, so
// one session is audit.*.<sid>.> and one type is audit.*.*.<type>.
func AuditSubject(ev Event) string {
	h := ev.Header()
	sid := ""
	if se, ok := ev.(SessionEvent); ok {
		sid = se.SessionHeader().SID
	}
	return EventSubject(h.Cluster, sid, h.Type)
}

// EventSubject is AuditSubject from an event's cluster, session id (empty
// outside a session) and type.
func EventSubject(cluster, sid, typ string) string {
	if sid == "" {
		sid = NoSession
	}
	var b strings.Builder
	b.Grow(len("audit...") + len(cluster) + len(sid) + len(typ))
	b.WriteString("audit.")
	b.WriteString(cluster)
	b.WriteByte('.')
	b.WriteString(sid)
	b.WriteByte('.')
	b.WriteString(typ)
	return b.String()
}

// EventSubjectOf is the subject an encoded event had when each event was
// a message of its own: a frame's events are stored under the frame's
// subject, and readers that route or filter by subject derive this one.
func EventSubjectOf(raw []byte) (string, error) {
	var h struct {
		Cluster string `json:"cluster"`
		SID     string `json:"sid"`
		Type    string `json:"type"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return "", fmt.Errorf("events: subject of an event: %w", err)
	}
	if h.Cluster == "" || h.Type == "" {
		return "", fmt.Errorf("events: subject of an event: no cluster or type")
	}
	return EventSubject(h.Cluster, h.SID, h.Type), nil
}

// SessionFilter is the subject filter that matches the single-event
// messages of one session, as streams held them before frames; frames
// (audit.<cluster>.frame.<src>) hold many sessions and are filtered after
// splitting (schemas/frames.md).
func SessionFilter(sid string) string { return "audit.*." + sid + ".>" }

// StateSubject is the subject of one aggregate instance in StateStream:
// state.<aggregate>.<id>.
func StateSubject(aggregate, id string) string { return "state." + aggregate + "." + id }

// ValidToken reports whether s can stand as one subject token (a cluster
// name, a session id, an aggregate id): non-empty, no dots, wildcards or
// whitespace.
func ValidToken(s string) error {
	if s == "" {
		return fmt.Errorf("empty subject token")
	}
	for _, r := range s {
		switch {
		case r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f:
			return fmt.Errorf("%q cannot be a subject token: it contains %q", s, r)
		}
	}
	return nil
}
