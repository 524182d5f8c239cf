package events

// Events of the exporters that deliver the audit stream to SIEMs. They are
// published to AUDIT (subject audit.<cluster>._.<type>), so the exporters
// deliver them too: an operator sees in the SIEM itself that an event went
// to the dead-letter stream instead.

func init() {
	Register[ExporterDeadLetter]("exporter.dead_letter", "TGEX001E",
		"A sink refused an event for good; the exporter stored it in the DEADLETTER stream and delivered the rest.")
}

// ExporterDeadLetter records an event that an exporter's sink rejected
// permanently (malformed for the sink, too large, refused by the server).
// The event itself is kept, byte for byte, under DeadLetterSubject; this
// event says which one and why. Reason holds the sink's answer, never a
// credential.
type ExporterDeadLetter struct {
	Envelope
	Exporter          string `json:"exporter" jsonschema:"description=Name of the exporter in the configuration"`
	Sink              string `json:"sink" jsonschema:"description=Type of its sink: splunk_hec, kafka, syslog or file"`
	Stream            string `json:"stream" jsonschema:"description=Stream the event was read from: AUDIT or STATE"`
	StreamSeq         uint64 `json:"stream_seq" jsonschema:"description=Sequence of the event in that stream"`
	EventID           string `json:"event_id" jsonschema:"description=Id of the rejected event"`
	EventType         string `json:"event_type,omitempty" jsonschema:"description=Type of the rejected event, when it could be read"`
	EventBytes        int    `json:"event_bytes" jsonschema:"description=Size of the rejected event as stored, in bytes"`
	Reason            string `json:"reason" jsonschema:"description=Why the sink rejected it"`
	DeadLetterSubject string `json:"dead_letter_subject" jsonschema:"description=Subject of the copy in the DEADLETTER stream: deadletter.<exporter>.<stream>"`
}
