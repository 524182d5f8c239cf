package events

import (
	"time"
)

// Event is implemented by every event type through the embedded Envelope.
type Event interface {
	Header() *Envelope
}

// SessionEvent is an event that belongs to a session; its subject carries the
// session id so one session can be read back without scanning the stream.
type SessionEvent interface {
	Event
	SessionHeader() *Session
}

// Envelope holds the fields every event carries (DESIGN.md §2.1).
type Envelope struct {
	// ID is unique across all events and is used as the JetStream
	// Nats-Msg-Id, so a publish retried after a timeout is stored once.
	ID string `json:"id" jsonschema:"description=Unique event id (ULID); also the JetStream Nats-Msg-Id"`
	// Type is the dotted event type, e.g. db.session.query.
	Type string `json:"type" jsonschema:"description=Dotted event type"`
	// Code is a stable short code for SIEM rules, e.g. TGDB002I.
	Code string `json:"code" jsonschema:"description=Stable short code: I info, W warning or denied, E error"`
	// Time is when the event happened, UTC.
	Time time.Time `json:"time" jsonschema:"description=RFC 3339 time with nanoseconds, UTC"`
	// Cluster is the name of the Tollgate cluster that produced the event.
	Cluster string `json:"cluster" jsonschema:"description=Cluster name"`
	// User and Roles come from the certificate of whoever caused the event.
	User  string   `json:"user,omitempty" jsonschema:"description=User from the certificate"`
	Roles []string `json:"roles,omitempty" jsonschema:"description=Roles from the certificate"`
}

// Header returns the envelope; embedding Envelope makes a struct an Event.
func (e *Envelope) Header() *Envelope { return e }

// Session identifies a session event: the session id and the gapless index of
// the event in that session (0, 1, 2, …), so a consumer can prove that
// nothing is missing.
type Session struct {
	SID string `json:"sid" jsonschema:"description=Session id"`
	EI  uint64 `json:"ei" jsonschema:"description=Gapless index of the event within its session, from 0"`
	// Prev chains the events of a session: the hash of the event stored
	// before this one (ChainGenesis of the session for the first). The
	// publisher sets it; schemas/integrity.md has the rules.
	Prev string `json:"prev,omitempty" jsonschema:"description=SHA-256 (base64) of the previous event of the session as stored, or of the session id for the first"`
	// Signer and Seal are on a session's last event only: the publisher
	// appends them, the seal last, when it stores the event.
	Signer string `json:"signer,omitempty" jsonschema:"description=Certificate (DER, base64) of the host that sealed the session, issued by the host CA"`
	Seal   string `json:"seal,omitempty" jsonschema:"description=Signature (base64) by signer over the SHA-256 of this event without its seal member; with prev it seals the whole session"`
}

// SessionHeader returns the session part of a session event.
func (s *Session) SessionHeader() *Session { return s }

// Status is embedded by events that have an outcome.
type Status struct {
	Success bool   `json:"success" jsonschema:"description=Whether the action succeeded"`
	Error   string `json:"error,omitempty" jsonschema:"description=Why it failed, when it failed"`
}

// Succeeded reports the outcome; Stamp uses it to pick the failure code.
func (s *Status) Succeeded() bool { return s.Success }

// Database describes the database a session event concerns.
type Database struct {
	Service  string `json:"db_service" jsonschema:"description=Name of the database in Tollgate"`
	Protocol string `json:"db_protocol" jsonschema:"description=Wire protocol: postgres, cockroachdb, mysql, sqlserver or redis"`
	URI      string `json:"db_uri" jsonschema:"description=Address of the database"`
	User     string `json:"db_user,omitempty" jsonschema:"description=Database user"`
	Name     string `json:"db_name,omitempty" jsonschema:"description=Database name"`
}

// DatabaseHeader returns the database part of an event that embeds it, so
// the agent fills it without reflection on every event.
func (d *Database) DatabaseHeader() *Database { return d }
