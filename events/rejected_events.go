package events

import "time"

func init() {
	Register[SessionRejected]("db.session.rejected", "TGDB006W",
		"Connections an agent refused before a session started (no or untrusted certificate, unknown database, not TLS, bad startup), counted per source and reason.")
}

// Reasons of a db.session.rejected event.
const (
	RejectNotTLS        = "not_tls"
	RejectBadStartup    = "bad_startup"
	RejectTLSHandshake  = "tls_handshake"
	RejectNoCertificate = "no_certificate"
	RejectCertExpired   = "cert_expired"
	RejectCertUntrusted = "cert_untrusted"
	RejectBadIdentity   = "bad_identity"
	RejectUnknownDB     = "unknown_database"
	RejectTooMany       = "too_many_connections"
	// RejectOffline is a registered database that no agent serves through
	// any proxy at the moment (the proxy's refusal).
	RejectOffline = "database_offline"
	// RejectUnknownCancelKey is a PostgreSQL cancel request with a key no
	// session holds: anyone who can reach the port can send one, so they
	// are aggregated like the other refusals.
	RejectUnknownCancelKey = "unknown_cancel_key"
	// RejectOverflow counts refusals from sources beyond the number the
	// agent tracks one by one.
	RejectOverflow = "overflow"
)

// SessionRejected reports connections refused before any session began.
// Refusals are aggregated per source address and reason: the first one is
// reported at once (count 1); those that follow within the window are
// reported together at its end, so a flood makes a few events, not one a
// connection. It is outside any session (no sid).
type SessionRejected struct {
	Envelope
	// ClientAddr is the remote address (IP and port) of the last refusal
	// reported; ClientIP the source they are counted by.
	ClientAddr string `json:"client_addr" jsonschema:"description=Remote address of the (last) refused connection"`
	ClientIP   string `json:"client_ip" jsonschema:"description=Source address the refusals are counted by"`
	Reason     string `json:"reason" jsonschema:"enum=not_tls,enum=bad_startup,enum=tls_handshake,enum=no_certificate,enum=cert_expired,enum=cert_untrusted,enum=bad_identity,enum=unknown_database,enum=database_offline,enum=too_many_connections,enum=unknown_cancel_key,enum=overflow,description=Why the connections were refused"`
	// Error is the agent's message for the last refusal, as the client
	// was told it where its protocol allows.
	Error string `json:"error,omitempty" jsonschema:"description=The agent's message for the (last) refusal"`
	// SNI is the TLS server name the client asked for, when the TLS
	// handshake got that far.
	SNI string `json:"sni,omitempty" jsonschema:"description=TLS server name (SNI) the client asked for"`
	// Protocol is the protocol of the port, when it serves one only.
	Protocol string `json:"db_protocol,omitempty" jsonschema:"description=Protocol of the port the connection reached, when it serves one only"`
	// Service is the database, when routing found one.
	Service string `json:"db_service,omitempty" jsonschema:"description=Database the connection was routed to, if any"`
	// Cert is what the client's certificate says, verified or not.
	Cert *PeerCertificate `json:"client_cert,omitempty" jsonschema:"description=The client's certificate, as presented (not necessarily trusted)"`
	// Count is how many refusals this event reports, First and Last when
	// the first and the last of them happened.
	Count uint64    `json:"count" jsonschema:"description=Refusals this event reports"`
	First time.Time `json:"first" jsonschema:"description=Time of the first refusal reported"`
	Last  time.Time `json:"last" jsonschema:"description=Time of the last refusal reported"`
	// WindowNs is the aggregation window, so a reader knows how far
	// apart two events of one source can be.
	WindowNs int64 `json:"window_ns" jsonschema:"description=Length of the aggregation window in nanoseconds"`
}

// PeerCertificate describes a certificate a peer presented. It holds no
// key and nothing secret: all of it is sent in clear in TLS 1.2.
type PeerCertificate struct {
	Subject     string    `json:"subject" jsonschema:"description=Subject distinguished name"`
	Issuer      string    `json:"issuer" jsonschema:"description=Issuer distinguished name"`
	Serial      string    `json:"serial" jsonschema:"description=Serial number, hex"`
	NotBefore   time.Time `json:"not_before" jsonschema:"description=Start of validity"`
	NotAfter    time.Time `json:"not_after" jsonschema:"description=End of validity"`
	Fingerprint string    `json:"sha256_fingerprint" jsonschema:"description=Hex SHA-256 of the certificate (DER)"`
}
