// Package agent is the database service: it accepts TLS connections from
// users with certificates, checks access, authenticates to the database
// itself, and proxies the database's wire protocol through one engine per
// protocol, auditing every message.
package agent
