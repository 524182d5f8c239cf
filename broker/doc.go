// Package broker is Tollgate's control plane: an event-sourced state built
// from the STATE stream (users, roles, tokens, databases, CA certificates,
// access requests, locks), the certificate authorities, the access decision
// and the public HTTPS API.
package broker
