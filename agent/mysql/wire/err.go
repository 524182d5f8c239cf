package wire

import (
	"fmt"
	"strconv"
)

// ErrPacket reports that a command failed (Protocol::ERR_Packet):
//
//	int<1>     header 0xff
//	int<2>     error code
//	string[1]  SQL state marker '#'   if CLIENT_PROTOCOL_41
//	string[5]  SQL state              if CLIENT_PROTOCOL_41
//	string<EOF> error message
//
// Servers leave the SQL state out before CLIENT_PROTOCOL_41 is negotiated
// (errors during the handshake), so Decode looks for the '#' marker rather
// than at capabilities. An ErrPacket is also a Go error.
//
// MariaDB sends progress reports as ERR packets with error code 0xffff to
// clients with MARIADB_CLIENT_PROGRESS; see IsProgressReport.
type ErrPacket struct {
	Code     uint16
	SQLState string // five characters, empty if the server sent none
	Message  string
}

// ProgressReportCode is the error code MariaDB uses for progress reports.
const ProgressReportCode = 0xffff

// IsProgressReport reports whether payload is a MariaDB progress report,
// which is informational and never ends a response.
func IsProgressReport(payload []byte) bool {
	return len(payload) >= 3 && payload[0] == ErrHeader && payload[1] == 0xff && payload[2] == 0xff
}

// Error formats the packet the way the mysql client does:
// "ERROR 1045 (28000): Access denied ...".
func (e *ErrPacket) Error() string {
	if e.SQLState == "" {
		return fmt.Sprintf("ERROR %d: %s", e.Code, e.Message)
	}
	return "ERROR " + strconv.Itoa(int(e.Code)) + " (" + e.SQLState + "): " + e.Message
}

// Decode parses an ERR packet.
func (e *ErrPacket) Decode(src []byte) error {
	*e = ErrPacket{}
	c := cursor{b: src}
	if h := c.uint8("ERR header"); c.err == nil && h != ErrHeader {
		return malformed("ERR packet header 0x%02x, want 0xff", h)
	}
	e.Code = c.uint16("error code")
	if c.err != nil {
		return c.err
	}
	if e.Code == ProgressReportCode {
		return malformed("ERR packet with code 0xffff is a MariaDB progress report")
	}
	if c.left() > 0 && src[c.pos] == '#' {
		c.take("SQL state marker", 1)
		e.SQLState = string(c.take("SQL state", 5))
	}
	e.Message = string(c.rest())
	return c.err
}

// Encode appends the ERR packet's payload to dst. The SQL state is written
// when caps has CLIENT_PROTOCOL_41 (HY000 if SQLState is empty).
func (e *ErrPacket) Encode(dst []byte, caps Capabilities) []byte {
	dst = append(dst, ErrHeader)
	dst = appendUint16(dst, e.Code)
	if caps.Has(ClientProtocol41) {
		state := e.SQLState
		if len(state) != 5 {
			state = "HY000"
		}
		dst = append(append(dst, '#'), state...)
	}
	return append(dst, e.Message...)
}
