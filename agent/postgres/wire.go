package postgres

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Request codes that take the place of a protocol version in a startup
// packet.
const (
	codeCancel   = 80877102
	codeSSL      = 80877103
	codeGSSENC   = 80877104
	protocolV3   = 3 << 16
	maxStartup   = 10000 // PostgreSQL's own MAX_STARTUP_PACKET_LENGTH
	headerLength = 5
)

// SQLSTATE codes the agent answers with.
const (
	stateInvalidAuthorization  = "28000"
	stateInsufficientPrivilege = "42501"
	stateTooManyConnections    = "53300"
	stateProtocolViolation     = "08P01"
	stateConnectionFailure     = "08006"
	// stateAuditUnavailable: class 58 is for errors outside the database,
	// which an unavailable audit store is.
	stateAuditUnavailable    = "58000"
	stateFeatureNotSupported = "0A000"
	// Sessions the agent ends (agent.Lifecycle).
	stateAdminShutdown      = "57P01"
	stateIdleSessionTimeout = "57P05"
)

// readStartup reads one startup-phase packet (no type byte): its code and
// the rest of its body.
func readStartup(r io.Reader) (code uint32, body []byte, err error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	code = binary.BigEndian.Uint32(hdr[4:])
	if n < 8 || n > maxStartup {
		return code, nil, fmt.Errorf("startup packet length %d is outside 8..%d", n, maxStartup)
	}
	body = make([]byte, n-8)
	if _, err := io.ReadFull(r, body); err != nil {
		return code, nil, fmt.Errorf("startup packet truncated: %w", err)
	}
	return code, body, nil
}

// parseStartupParams decodes the key/value pairs of a StartupMessage.
func parseStartupParams(b []byte) (map[string]string, error) {
	params := map[string]string{}
	for {
		if len(b) == 0 {
			return nil, fmt.Errorf("startup message does not end with a zero byte")
		}
		if b[0] == 0 {
			if len(b) != 1 {
				return nil, fmt.Errorf("startup message has %d bytes after its end", len(b)-1)
			}
			return params, nil
		}
		k, rest, ok := cutZero(b)
		if !ok {
			return nil, fmt.Errorf("startup message parameter name is not terminated")
		}
		v, rest, ok := cutZero(rest)
		if !ok {
			return nil, fmt.Errorf("startup message parameter %q has no terminated value", k)
		}
		params[k] = v
		b = rest
	}
}

func cutZero(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

// errorResponse encodes an ErrorResponse with the agent's own message.
func errorResponse(severity, code, msg string) []byte {
	b, _ := (&pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: msg}).Encode(nil)
	return b
}

// readyForQuery encodes ReadyForQuery with a transaction status.
func readyForQuery(status byte) []byte {
	return []byte{'Z', 0, 0, 0, 5, status}
}
