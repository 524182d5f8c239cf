// Package sessions projects the AUDIT stream into live and past sessions and
// replays a recorded session as a timeline or against another database.
//
// The broker keeps an index of the sessions (StartIndex) in the SESSIONS
// key-value bucket: List reads its entries and Load only the AUDIT messages
// it names, since AUDIT frames hold the events of many sessions under one
// subject. Without the index both still work, reading the stream.
package sessions
