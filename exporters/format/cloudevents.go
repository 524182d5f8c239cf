package format

import "time"

// CloudEvents 1.0, structured content mode (JSON event format): the
// envelope maps to the context attributes and the event, unchanged, is
// data.
const (
	// CloudEventsContentType is the media type of a structured CloudEvent.
	CloudEventsContentType = "application/cloudevents+json"
	// CloudEventsTypePrefix prefixes the event type: tollgate.db.session.query.
	CloudEventsTypePrefix = "tollgate."
	// SchemaBase is where the JSON Schema of each event type lives (the
	// $id of the files in schemas/).
	SchemaBase = "https://github.com/tollgate-db/tollgate/schemas/"
)

type cloudEventsFormat struct{}

func (cloudEventsFormat) Name() string { return CloudEvents }

// Append writes the attributes by hand: the event is embedded as it is
// (Scan has checked it is one JSON object), so nothing is decoded.
func (cloudEventsFormat) Append(dst []byte, env *Envelope, event []byte) ([]byte, error) {
	dst = append(dst, `{"specversion":"1.0","id":`...)
	dst = appendString(dst, env.ID)
	dst = append(dst, `,"source":`...)
	dst = appendString(dst, "/tollgate/"+env.Cluster)
	dst = append(dst, `,"type":`...)
	dst = appendString(dst, CloudEventsTypePrefix+env.Type)
	if env.SID != "" {
		dst = append(dst, `,"subject":`...)
		dst = appendString(dst, env.SID)
	}
	dst = append(dst, `,"time":"`...)
	dst = env.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","datacontenttype":"application/json","dataschema":`...)
	dst = appendString(dst, SchemaBase+env.Type+".json")
	if env.Code != "" {
		// Extension attribute: the stable code SIEM rules key on.
		dst = append(dst, `,"tollgatecode":`...)
		dst = appendString(dst, env.Code)
	}
	// data is the event byte for byte, not re-encoded: the bytes a
	// session's hash chain and seal cover, so a CloudEvents copy verifies
	// offline (events.EventHash over data) as the stored event does.
	dst = append(dst, `,"data":`...)
	dst = append(dst, event...)
	return append(dst, '}'), nil
}
