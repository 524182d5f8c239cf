package wire

// StmtPrepareOK is the first packet of a successful COM_STMT_PREPARE
// response (COM_STMT_PREPARE_OK):
//
//	int<1> status 0x00
//	int<4> statement id
//	int<2> number of columns
//	int<2> number of parameters
//	int<1> reserved 0x00
//	int<2> warning count          if the packet is longer than 10 bytes
//	int<1> metadata_follows       if CLIENT_OPTIONAL_RESULTSET_METADATA
//
// It is followed by NumParams parameter definitions and NumColumns column
// definitions, each group ended by EOF unless CLIENT_DEPRECATE_EOF.
type StmtPrepareOK struct {
	StatementID     uint32
	NumColumns      uint16
	NumParams       uint16
	Warnings        uint16
	MetadataFollows uint8 // 1 (full) unless the client chose optional metadata
}

// Decode parses a COM_STMT_PREPARE_OK packet.
func (p *StmtPrepareOK) Decode(src []byte, caps Capabilities) error {
	*p = StmtPrepareOK{MetadataFollows: 1}
	c := cursor{b: src}
	if h := c.uint8("status"); c.err == nil && h != 0 {
		return malformed("COM_STMT_PREPARE_OK status 0x%02x, want 0x00", h)
	}
	p.StatementID = c.uint32("statement id")
	p.NumColumns = c.uint16("number of columns")
	p.NumParams = c.uint16("number of parameters")
	c.take("reserved", 1)
	if c.err == nil && c.left() > 0 {
		p.Warnings = c.uint16("warning count")
	}
	if caps.Has(ClientOptionalResultsetMetadata) && c.err == nil && c.left() > 0 {
		p.MetadataFollows = c.uint8("metadata_follows")
	}
	return c.done("COM_STMT_PREPARE_OK")
}

// Encode appends the packet's payload to dst.
func (p *StmtPrepareOK) Encode(dst []byte, caps Capabilities) []byte {
	dst = append(dst, 0)
	dst = appendUint32(dst, p.StatementID)
	dst = appendUint16(dst, p.NumColumns)
	dst = appendUint16(dst, p.NumParams)
	dst = append(dst, 0)
	dst = appendUint16(dst, p.Warnings)
	if caps.Has(ClientOptionalResultsetMetadata) {
		dst = append(dst, p.MetadataFollows)
	}
	return dst
}
