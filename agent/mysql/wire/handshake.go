package wire

import (
	"bytes"
	"strings"
)

// HandshakeV10 is the server's greeting (Protocol::HandshakeV10), the first
// packet of every connection:
//
//	int<1>      protocol version (10)
//	string<NUL> server version
//	int<4>      connection id
//	string[8]   auth-plugin-data-part-1
//	int<1>      filler 0x00
//	int<2>      capability flags, lower 2 bytes
//	int<1>      character set
//	int<2>      status flags
//	int<2>      capability flags, upper 2 bytes
//	int<1>      length of auth-plugin-data (0 without CLIENT_PLUGIN_AUTH)
//	string[6]   reserved
//	int<4>      MariaDB: extended capabilities if CLIENT_MYSQL is clear, else reserved
//	string[n]   auth-plugin-data-part-2 if CLIENT_SECURE_CONNECTION, n = max(13, length - 8)
//	string<NUL> auth plugin name if CLIENT_PLUGIN_AUTH
type HandshakeV10 struct {
	ProtocolVersion uint8
	ServerVersion   string
	ConnectionID    uint32
	// AuthPluginData is the scramble: part 1 and part 2 joined, without
	// part 2's trailing NUL (20 bytes for the usual plugins).
	AuthPluginData []byte
	// Capabilities include MariaDB's extended flags in the high 32 bits.
	Capabilities   Capabilities
	CharacterSet   uint8
	Status         StatusFlags
	AuthPluginName string
}

// IsMariaDB reports whether the greeting comes from MariaDB (10.2+ clears
// CLIENT_MYSQL; older ones say so in the version string).
func (h *HandshakeV10) IsMariaDB() bool {
	return !h.Capabilities.Has(ClientMySQL) || strings.Contains(h.ServerVersion, "MariaDB")
}

// Decode parses a server greeting. A greeting that is an ERR packet (the
// server refusing the connection, e.g. too many connections) is returned as
// the error, of type *ErrPacket.
func (h *HandshakeV10) Decode(src []byte) error {
	*h = HandshakeV10{}
	if len(src) > 0 && src[0] == 0xff {
		var e ErrPacket
		if err := e.Decode(src); err != nil {
			return err
		}
		return &e
	}
	c := cursor{b: src}
	h.ProtocolVersion = c.uint8("protocol version")
	if c.err == nil && h.ProtocolVersion != 10 {
		return malformed("handshake protocol version %d, only 10 is supported", h.ProtocolVersion)
	}
	h.ServerVersion = c.nulString("server version")
	h.ConnectionID = c.uint32("connection id")
	part1 := c.take("auth-plugin-data-part-1", 8)
	c.take("filler", 1)
	caps := Capabilities(c.uint16("capability flags (lower)"))
	if c.err != nil {
		return c.err
	}
	h.AuthPluginData = append([]byte(nil), part1...)
	if c.left() == 0 {
		// Protocol 4.0 servers may stop here.
		h.Capabilities = caps
		return nil
	}
	h.CharacterSet = c.uint8("character set")
	h.Status = StatusFlags(c.uint16("status flags"))
	caps |= Capabilities(c.uint16("capability flags (upper)")) << 16
	authLen := int(c.uint8("auth-plugin-data length"))
	c.take("reserved", 6)
	ext := c.uint32("MariaDB extended capabilities")
	if caps&ClientMySQL == 0 {
		caps |= Capabilities(ext) << 32
	}
	h.Capabilities = caps
	if caps.Has(ClientSecureConnection) {
		n := max(13, authLen-8)
		if n > c.left() && !caps.Has(ClientPluginAuth) {
			// Some servers send part 2 without the trailing NUL.
			n = c.left()
		}
		part2 := c.take("auth-plugin-data-part-2", n)
		if l := len(part2); l > 0 && part2[l-1] == 0 {
			part2 = part2[:l-1]
		}
		h.AuthPluginData = append(h.AuthPluginData, part2...)
	}
	if caps.Has(ClientPluginAuth) && c.err == nil {
		rest := c.rest()
		// MySQL 5.5.7-5.5.9 sent the name without its NUL (Bug#59453).
		if i := bytes.IndexByte(rest, 0); i >= 0 {
			rest = rest[:i]
		}
		h.AuthPluginName = string(rest)
	}
	return c.err
}

// Encode appends the greeting's payload to dst.
func (h *HandshakeV10) Encode(dst []byte) []byte {
	caps := h.Capabilities
	dst = append(dst, h.ProtocolVersion)
	dst = AppendNulString(dst, h.ServerVersion)
	dst = appendUint32(dst, h.ConnectionID)
	var part1 [8]byte
	copy(part1[:], h.AuthPluginData)
	dst = append(dst, part1[:]...)
	dst = append(dst, 0)
	dst = appendUint16(dst, uint16(caps))
	dst = append(dst, h.CharacterSet)
	dst = appendUint16(dst, uint16(h.Status))
	dst = appendUint16(dst, uint16(caps>>16))
	var part2 []byte
	if len(h.AuthPluginData) > 8 {
		part2 = h.AuthPluginData[8:]
	}
	if caps.Has(ClientPluginAuth) {
		dst = append(dst, byte(8+len(part2)+1))
	} else {
		dst = append(dst, 0)
	}
	dst = append(dst, 0, 0, 0, 0, 0, 0)
	if caps&ClientMySQL == 0 {
		dst = appendUint32(dst, uint32(caps>>32))
	} else {
		dst = append(dst, 0, 0, 0, 0)
	}
	if caps.Has(ClientSecureConnection) {
		dst = append(dst, part2...)
		for i := len(part2); i < 12; i++ {
			dst = append(dst, 0)
		}
		dst = append(dst, 0)
	}
	if caps.Has(ClientPluginAuth) {
		dst = AppendNulString(dst, h.AuthPluginName)
	}
	return dst
}
