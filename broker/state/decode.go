package state

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/tollgate-db/tollgate/events"
)

// typeOf finds the event type in an encoded event without decoding it. The
// envelope is the first field of every event, so "type" follows "id" at the
// start of the object; anything else falls back to a full decode of the
// envelope.
func typeOf(data []byte) (string, error) {
	const key = `"type":"`
	head := data
	if len(head) > 160 {
		head = head[:160]
	}
	if i := bytes.Index(head, []byte(key)); i >= 0 {
		rest := data[i+len(key):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 && bytes.IndexByte(rest[:j], '\\') < 0 {
			return string(rest[:j]), nil
		}
	}
	var env struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return "", err
	}
	return env.Type, nil
}

// newEvent returns an empty event of a STATE type, or nil for a type this
// version does not apply (a newer broker may write types an older agent
// does not know; they are skipped, not fatal).
func newEvent(typ string) events.Event {
	switch typ {
	case "user.create":
		return new(events.UserCreate)
	case "user.update":
		return new(events.UserUpdate)
	case "user.delete":
		return new(events.UserDelete)
	case "user.password_set":
		return new(events.UserPasswordSet)
	case "user.mfa_add":
		return new(events.UserMFAAdd)
	case "user.mfa_remove":
		return new(events.UserMFARemove)
	case "role.create":
		return new(events.RoleCreate)
	case "role.update":
		return new(events.RoleUpdate)
	case "role.delete":
		return new(events.RoleDelete)
	case "connector.create":
		return new(events.ConnectorCreate)
	case "connector.update":
		return new(events.ConnectorUpdate)
	case "connector.delete":
		return new(events.ConnectorDelete)
	case "token.create":
		return new(events.TokenCreate)
	case "token.use":
		return new(events.TokenUse)
	case "db.create":
		return new(events.DBCreate)
	case "db.delete":
		return new(events.DBDelete)
	case "ca.publish":
		return new(events.CAPublish)
	case "access_request.create":
		return new(events.AccessRequestCreate)
	case "access_request.update":
		return new(events.AccessRequestUpdate)
	case "lock.create":
		return new(events.LockCreate)
	case "lock.delete":
		return new(events.LockDelete)
	}
	return nil
}

// decode turns a stored message body into its event; (nil, nil) for an
// unknown type. in (may be nil) interns repeated strings.
func decode(data []byte, in *interner) (events.Event, error) {
	typ, err := typeOf(data)
	if err != nil {
		return nil, fmt.Errorf("not an event: %w", err)
	}
	ev := newEvent(typ)
	if ev == nil {
		return nil, nil
	}
	if decodeFast(data, ev, in) == nil {
		return ev, nil
	}
	ev = newEvent(typ) // drop what the fast path filled in
	if err := json.Unmarshal(data, ev); err != nil {
		return nil, fmt.Errorf("%s: %w", typ, err)
	}
	return ev, nil
}
