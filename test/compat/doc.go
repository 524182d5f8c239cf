// Package compat is Tollgate's wire compatibility suite: for each engine a
// table of client features, each run directly against a real database and
// through the agent with the same client library, and what the client
// observed (values, types, column names, row counts, command tags, error
// codes, notices) compared. Any difference is a failing test.
//
// One world per engine: PostgreSQL 15 with pgx, MariaDB 10.11 with
// go-sql-driver/mysql, each started by test/harness and trusting both the
// harness's test CA (the direct client) and Tollgate's db-client CA (the
// agent), with an agent in front of it that the client reaches with a user
// certificate. The summary subtest prints the table (feature × client,
// pass or fail) into the test log.
//
// What each target observed can be written out to read it:
//
//	go test -run TestCompat ./test/compat -args -compat.dump=/tmp/compat
//
// Only what must differ is normalised, each with its reason where it is
// done: connection and backend IDs, large-object OIDs, dialled addresses.
package compat
