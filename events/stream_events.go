package events

// Events about the event store itself. They are published to AUDIT
// (subject audit.<cluster>._.<type>) when it still takes them, and logged
// at error level either way.

func init() {
	Register[StreamWeakened]("audit.stream_weakened", "TGST001W",
		"The AUDIT stream was found missing or weaker than configured (storage, limits, deny flags, …); strict agents refuse statements until it is restored.")
}

// StreamWeakened records that a stream was found missing or reconfigured
// so that events in it could be lost or erased. The envelope's user is who
// saw it (the broker).
type StreamWeakened struct {
	Envelope
	Stream  string   `json:"stream" jsonschema:"description=Name of the stream: AUDIT"`
	Missing bool     `json:"missing,omitempty" jsonschema:"description=Set when the stream did not exist (it was deleted)"`
	Defects []string `json:"defects,omitempty" jsonschema:"description=Each way the stream is weaker than it must be, e.g. storage is memory, want file"`
	Fault   string   `json:"fault" jsonschema:"description=The whole finding in one sentence, as logged"`
	// StoredAgain marks the copy stored once the stream was sound again:
	// the first was stored in the weakened stream, where it may be lost.
	StoredAgain bool `json:"stored_again,omitempty" jsonschema:"description=Set on the copy stored once the stream was sound again; the first copy went to the weakened stream and may be lost"`
}

// NewStreamWeakened is the alert event of a fault found by CheckAudit or
// a Guard; any other error is recorded as the fault sentence alone.
func NewStreamWeakened(fault error) *StreamWeakened {
	ev := &StreamWeakened{Stream: AuditStream, Fault: fault.Error()}
	if f, ok := fault.(*StreamFault); ok {
		ev.Stream, ev.Missing, ev.Defects = f.Stream, f.Missing, f.Defects
	}
	return ev
}
