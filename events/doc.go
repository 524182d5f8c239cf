// Package events holds Tollgate's event model: the envelope every event
// carries, the registry of event types with their stable codes, the subjects
// and streams they live in on NATS JetStream, and the publisher that stores
// them before anything else may happen.
//
// Every event type is a Go struct that embeds Envelope (and, for events that
// belong to a database session, Session and Database). The JSON Schema of each
// type in schemas/ is generated from these structs.
package events
