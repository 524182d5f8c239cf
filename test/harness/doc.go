// Package harness starts real servers for tests: PostgreSQL 15 and MariaDB
// 10.11 as child processes, NATS JetStream (single node or cluster) embedded
// in the test binary. Each server runs on a free loopback port in a
// temporary directory and is stopped by t.Cleanup, so a test leaves nothing
// running behind it: a server that does not stop in time is killed with its
// process group and any child that left the group, and if the test binary
// itself dies the kernel stops the servers (parent-death signal).
//
// The databases accept only TLS with client certificates on their TCP
// port: PostgreSQL through pg_hba "hostssl ... cert", MariaDB through
// require_secure_transport and users made REQUIRE SUBJECT '/CN=<user>'.
// A test CA issues the server certificate and client certificates; the
// options take an outside CA instead (for example Tollgate's db-client CA)
// with a server certificate. The harness itself administers each database
// over a Unix socket in the temporary directory.
//
//	pg := harness.PostgresWith(t, harness.PostgresOptions{Users: []string{"alice"}})
//	conn, err := pgx.Connect(ctx, pg.DSN(t, "alice")) // verify-full, client certificate
//	...
//	statements, err := pg.StatementLog() // the server's own record (log_statement=all)
//
//	m := harness.MariaDBWith(t, harness.MariaDBOptions{Users: []string{"alice"}})
//	db := sql.OpenDB(mysql.NewConnector(m.Config(t, "alice")))
//	queries, err := m.GeneralLog()
//
//	c := harness.NATSCluster(t, 3) // waits for a JetStream meta leader
//	nc, err := nats.Connect(c.URL())
//	c.StopNode(0); ...; c.RestartNode(0)
//
// Fresh data directories are copied from a template built once per server
// version (initdb, mariadb-install-db) and kept under the system temp dir,
// so a server starts in a few hundred milliseconds.
//
// A server program that is not installed fails the test with the Debian
// package to install: the suite never skips a test for a missing server.
package harness
