// Package load measures one agent under many sessions: a thousand idle
// sessions and a few hundred busy ones through one agent (memory per
// session, CPU, no session starved), a connection storm past the
// configured limits (db_service.max_connections and
// max_connections_per_user: clear refusals, no crash), and no goroutine or
// file descriptor left behind afterwards.
//
// The agent runs in the test process (agent/service, as `tollgate start`
// runs it, with an embedded NATS server) so that its goroutines, memory
// and descriptors can be counted; the clients run in a child process (the
// test binary again) so that they are not counted with it.
package load
