// Package harness starts real servers for tests: PostgreSQL 15 and MariaDB
// 10.11 as child processes, NATS JetStream (single node or cluster) embedded
// in the test binary. Each server runs on a free loopback port in a
// temporary directory and is stopped by t.Cleanup, so a test leaves nothing
// running behind it. The databases accept only TLS with client certificates
// on their TCP port; a test PKI issues server and client certificates, or
// the caller supplies its own CA (for example Tollgate's db-client CA).
//
// A server binary that is not installed fails the test with the Debian
// package to install: the suite never skips a test for a missing server.
package harness
