// Package schemas holds the JSON Schema of every event type, generated from
// the Go types in events/ by `make generate` and checked in, and a validator
// that checks any event against the schema of its type.
package schemas
