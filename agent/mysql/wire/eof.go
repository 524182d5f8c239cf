package wire

// EOFPacket marks the end of column definitions or rows when
// CLIENT_DEPRECATE_EOF is not negotiated (Protocol::EOF_Packet):
//
//	int<1> header 0xfe
//	int<2> warnings      if CLIENT_PROTOCOL_41
//	int<2> status flags  if CLIENT_PROTOCOL_41
//
// An EOF packet is shorter than 9 bytes, which tells it from a row or a
// length-encoded integer that starts with 0xfe.
type EOFPacket struct {
	Warnings uint16
	Status   StatusFlags
}

// IsEOF reports whether payload is an EOF packet (0xfe, fewer than 9 bytes).
func IsEOF(payload []byte) bool {
	return len(payload) > 0 && len(payload) < 9 && payload[0] == EOFHeader
}

// Decode parses an EOF packet.
func (e *EOFPacket) Decode(src []byte, caps Capabilities) error {
	*e = EOFPacket{}
	if !IsEOF(src) {
		return malformed("EOF packet must be 0xfe and shorter than 9 bytes, got %d bytes", len(src))
	}
	if !caps.Has(ClientProtocol41) {
		return nil
	}
	c := cursor{b: src, pos: 1}
	e.Warnings = c.uint16("warnings")
	e.Status = StatusFlags(c.uint16("status flags"))
	return c.err
}

// Encode appends the EOF packet's payload to dst.
func (e *EOFPacket) Encode(dst []byte, caps Capabilities) []byte {
	dst = append(dst, EOFHeader)
	if caps.Has(ClientProtocol41) {
		dst = appendUint16(dst, e.Warnings)
		dst = appendUint16(dst, uint16(e.Status))
	}
	return dst
}
