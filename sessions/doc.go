// Package sessions projects the AUDIT stream into live and past sessions and
// replays a recorded session as a timeline or against another database.
package sessions
