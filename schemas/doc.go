// Package schemas holds the JSON Schema of every event type, generated from
// the Go types in events/ by `make generate` and checked in, and a validator
// that checks any event against the schema of its type.
//
// Every *.json file here is generated from events.Specs(), one <type>.json
// per registered event type plus index.json (type to codes and file, code to
// type); adding or changing an event type in events/ means running
// `make generate` and committing the result, which TestCheckedInUpToDate
// enforces. Files of types that are no longer registered are removed.
//
// Tests anywhere in the project may import this package: it imports no
// project package but events.
package schemas

//go:generate go run ./gen
