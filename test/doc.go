// Package test holds Tollgate's end-to-end tests. The harness in test/harness
// starts real servers (PostgreSQL, MariaDB, NATS, MIT Kerberos, rsyslog) on
// free loopback ports; test/bench holds the end-to-end benchmarks.
package test
