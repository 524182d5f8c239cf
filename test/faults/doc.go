// Package faults proves Tollgate's promise under faults: with PostgreSQL
// and MariaDB (general_log) logging every statement, load runs through an
// agent (a `tollgate start` child process): pgbench, and sysbench through
// a plaintext tunnel carried in TLS to the agent, while one fault at a
// time hits the system: the NATS server SIGKILLed and restarted, the
// agent SIGKILLed and restarted, the broker and the file exporter
// SIGKILLed, the JetStream store filled to its limit, the agent cut from
// NATS. After each, the databases' own logs
// are compared with the AUDIT stream (no statement without its event) and
// the exporter's file with the stream (every stored event delivered).
// The same checks run on a three-node JetStream cluster (R3) with a node
// killed, and on an agent whose embedded NATS is a leaf node of a hub,
// cut from it.
//
// TestCleanRunVerifies runs a clean load (pgbench simple and prepared,
// sysbench) and proves the trail with `tollgate audit verify`: the live
// stream, and the native, OCSF and CloudEvents files of the exporters
// with the exported host CA; a statement changed in a copy is caught.
//
// `make faults` runs the whole campaign (TOLLGATE_FAULTS=1) and writes
// test/bench/faults.md; `go test` alone runs a short smoke version.
package faults
