package wire

// OKPacket reports that a command succeeded (Protocol::OK_Packet):
//
//	int<1>      header: 0x00, or 0xfe where it ends a result set under CLIENT_DEPRECATE_EOF
//	int<lenenc> affected rows
//	int<lenenc> last insert id
//	int<2>      status flags     if CLIENT_PROTOCOL_41 or CLIENT_TRANSACTIONS
//	int<2>      warnings         if CLIENT_PROTOCOL_41
//	string<lenenc> info          (servers omit it when empty)
//	string<lenenc> session state if CLIENT_SESSION_TRACK and SERVER_SESSION_STATE_CHANGED
//
// The documentation gives info as string<EOF> without CLIENT_SESSION_TRACK,
// but MySQL and MariaDB both send it length-encoded; Decode accepts either.
type OKPacket struct {
	Header       byte
	AffectedRows uint64
	LastInsertID uint64
	Status       StatusFlags
	Warnings     uint16
	Info         string
	SessionState []byte // raw session state changes (CLIENT_SESSION_TRACK)
}

// OK packet headers.
const (
	OKHeader    = 0x00
	EOFHeader   = 0xfe
	ErrHeader   = 0xff
	LocalInfile = 0xfb // LOCAL INFILE request in place of a result set
)

// Decode parses an OK packet sent to a client with capabilities caps.
func (o *OKPacket) Decode(src []byte, caps Capabilities) error {
	*o = OKPacket{}
	c := cursor{b: src}
	o.Header = c.uint8("OK header")
	if c.err == nil && o.Header != OKHeader && o.Header != EOFHeader {
		return malformed("OK packet header 0x%02x, want 0x00 or 0xfe", o.Header)
	}
	o.AffectedRows, _ = c.lenEncInt("affected rows")
	o.LastInsertID, _ = c.lenEncInt("last insert id")
	switch {
	case caps.Has(ClientProtocol41):
		o.Status = StatusFlags(c.uint16("status flags"))
		o.Warnings = c.uint16("warnings")
	case caps.Has(ClientTransactions):
		o.Status = StatusFlags(c.uint16("status flags"))
	}
	if c.err != nil || c.left() == 0 {
		return c.err
	}
	if caps.Has(ClientSessionTrack) {
		o.Info = c.lenEncString("info")
		if o.Status.Has(ServerSessionStateChanged) && c.left() > 0 {
			o.SessionState = cloneBytes(c.lenEncBytes("session state info"))
		}
		if c.err == nil && c.left() > 0 {
			return malformed("OK packet has %d unexpected trailing bytes", c.left())
		}
		return c.err
	}
	rest := c.rest()
	if s, null, n, err := ReadLenEncString(rest); err == nil && !null && n == len(rest) {
		o.Info = string(s)
	} else {
		o.Info = string(rest)
	}
	return nil
}

// Encode appends the OK packet's payload to dst for a client with
// capabilities caps. A zero Header encodes as 0x00.
func (o *OKPacket) Encode(dst []byte, caps Capabilities) []byte {
	dst = append(dst, o.Header)
	dst = AppendLenEncInt(dst, o.AffectedRows)
	dst = AppendLenEncInt(dst, o.LastInsertID)
	switch {
	case caps.Has(ClientProtocol41):
		dst = appendUint16(dst, uint16(o.Status))
		dst = appendUint16(dst, o.Warnings)
	case caps.Has(ClientTransactions):
		dst = appendUint16(dst, uint16(o.Status))
	}
	if caps.Has(ClientSessionTrack) {
		if o.Info != "" || o.Status.Has(ServerSessionStateChanged) {
			dst = AppendLenEncString(dst, o.Info)
		}
		if o.Status.Has(ServerSessionStateChanged) {
			dst = AppendLenEncBytes(dst, o.SessionState)
		}
		return dst
	}
	if o.Info != "" {
		dst = AppendLenEncString(dst, o.Info)
	}
	return dst
}
