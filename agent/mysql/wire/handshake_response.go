package wire

// HandshakeResponse41 is the client's answer to the greeting
// (Protocol::HandshakeResponse41):
//
//	int<4>      client capability flags
//	int<4>      max packet size
//	int<1>      character set
//	string[19]  filler
//	int<4>      MariaDB: extended capabilities if CLIENT_MYSQL is clear, else filler
//	string<NUL> username
//	auth response: string<lenenc> with CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
//	               else int<1> length + bytes with CLIENT_SECURE_CONNECTION,
//	               else string<NUL>
//	string<NUL> database if CLIENT_CONNECT_WITH_DB
//	string<NUL> client auth plugin name if CLIENT_PLUGIN_AUTH
//	int<lenenc> length of attributes, then string<lenenc> key/value pairs,
//	            if CLIENT_CONNECT_ATTRS
//	int<1>      zstd compression level if CLIENT_ZSTD_COMPRESSION_ALGORITHM
//
// Fields after the username that a client announces but leaves out at the
// very end of the packet decode as empty, as servers accept.
type HandshakeResponse41 struct {
	Capabilities  Capabilities // with MariaDB's extended flags in the high 32 bits
	MaxPacketSize uint32
	CharacterSet  uint8
	Username      string
	AuthResponse  []byte // secret-bearing: never log it
	Database      string
	AuthPlugin    string
	Attributes    []Attribute
	ZstdLevel     uint8
}

// Attribute is one connection attribute (CLIENT_CONNECT_ATTRS), such as
// _client_name or program_name, in the order the client sent them.
type Attribute struct {
	Key   string
	Value string
}

// sslRequestLen is the size of an SSLRequest and of the fixed head of a
// HandshakeResponse41.
const sslRequestLen = 32

// Decode parses a HandshakeResponse41. It refuses the pre-4.1
// HandshakeResponse320 and an SSLRequest (see IsSSLRequest).
func (h *HandshakeResponse41) Decode(src []byte) error {
	*h = HandshakeResponse41{}
	c := cursor{b: src}
	h.Capabilities, h.MaxPacketSize, h.CharacterSet = decodeClientHead(&c)
	if c.err != nil {
		return c.err
	}
	if !h.Capabilities.Has(ClientProtocol41) {
		return malformed("handshake response without CLIENT_PROTOCOL_41 (pre-4.1 clients are not supported)")
	}
	if c.left() == 0 {
		return malformed("handshake response ends after its %d-byte head (an SSLRequest where a HandshakeResponse41 was expected)", sslRequestLen)
	}
	caps := h.Capabilities
	h.Username = c.nulString("username")
	switch {
	case caps.Has(ClientPluginAuthLenEncClientData):
		h.AuthResponse = cloneBytes(c.lenEncBytes("auth response"))
	case caps.Has(ClientSecureConnection):
		n := int(c.uint8("auth response length"))
		h.AuthResponse = cloneBytes(c.take("auth response", n))
	default:
		h.AuthResponse = cloneBytes(c.nulBytes("auth response"))
	}
	if caps.Has(ClientConnectWithDB) && c.left() > 0 {
		h.Database = c.nulString("database")
	}
	if caps.Has(ClientPluginAuth) && c.left() > 0 {
		h.AuthPlugin = c.nulString("client auth plugin name")
	}
	if caps.Has(ClientConnectAttrs) && c.left() > 0 {
		h.Attributes = decodeAttributes(&c)
	}
	if caps.Has(ClientZstdCompressionAlgorithm) && c.left() > 0 {
		h.ZstdLevel = c.uint8("zstd compression level")
	}
	if c.err == nil && c.left() > 0 {
		return malformed("handshake response has %d unexpected trailing bytes", c.left())
	}
	return c.err
}

// decodeClientHead reads the 32-byte head shared by HandshakeResponse41 and
// SSLRequest: capabilities (MariaDB's extended ones included), max packet
// size and character set.
func decodeClientHead(c *cursor) (caps Capabilities, maxPacket uint32, charset uint8) {
	caps = Capabilities(c.uint32("client capability flags"))
	maxPacket = c.uint32("max packet size")
	charset = c.uint8("character set")
	c.take("filler", 19)
	ext := c.uint32("MariaDB extended capabilities")
	if caps&ClientMySQL == 0 {
		caps |= Capabilities(ext) << 32
	}
	return caps, maxPacket, charset
}

func appendClientHead(dst []byte, caps Capabilities, maxPacket uint32, charset uint8) []byte {
	dst = appendUint32(dst, uint32(caps))
	dst = appendUint32(dst, maxPacket)
	dst = append(dst, charset)
	dst = append(dst, make([]byte, 19)...)
	if caps&ClientMySQL == 0 {
		return appendUint32(dst, uint32(caps>>32))
	}
	return append(dst, 0, 0, 0, 0)
}

func decodeAttributes(c *cursor) []Attribute {
	n, _ := c.lenEncInt("connection attributes length")
	if c.err != nil {
		return nil
	}
	if n > uint64(c.left()) {
		c.err = malformed("connection attributes of %d bytes, only %d left", n, c.left())
		return nil
	}
	sub := cursor{b: c.take("connection attributes", int(n))}
	var attrs []Attribute
	for sub.err == nil && sub.left() > 0 {
		k := sub.lenEncString("connection attribute key")
		v := sub.lenEncString("connection attribute value")
		attrs = append(attrs, Attribute{Key: k, Value: v})
	}
	if sub.err != nil {
		c.err = sub.err
		return nil
	}
	return attrs
}

func appendAttributes(dst []byte, attrs []Attribute) []byte {
	n := 0
	for _, a := range attrs {
		n += LenEncIntSize(uint64(len(a.Key))) + len(a.Key) + LenEncIntSize(uint64(len(a.Value))) + len(a.Value)
	}
	dst = AppendLenEncInt(dst, uint64(n))
	for _, a := range attrs {
		dst = AppendLenEncString(dst, a.Key)
		dst = AppendLenEncString(dst, a.Value)
	}
	return dst
}

// Encode appends the response's payload to dst, laid out by its own
// Capabilities. An auth response longer than 250 bytes needs
// CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA.
func (h *HandshakeResponse41) Encode(dst []byte) []byte {
	caps := h.Capabilities
	dst = appendClientHead(dst, caps, h.MaxPacketSize, h.CharacterSet)
	dst = AppendNulString(dst, h.Username)
	switch {
	case caps.Has(ClientPluginAuthLenEncClientData):
		dst = AppendLenEncBytes(dst, h.AuthResponse)
	case caps.Has(ClientSecureConnection):
		dst = append(dst, byte(len(h.AuthResponse)))
		dst = append(dst, h.AuthResponse...)
	default:
		dst = append(append(dst, h.AuthResponse...), 0)
	}
	if caps.Has(ClientConnectWithDB) {
		dst = AppendNulString(dst, h.Database)
	}
	if caps.Has(ClientPluginAuth) {
		dst = AppendNulString(dst, h.AuthPlugin)
	}
	if caps.Has(ClientConnectAttrs) {
		dst = appendAttributes(dst, h.Attributes)
	}
	if caps.Has(ClientZstdCompressionAlgorithm) {
		dst = append(dst, h.ZstdLevel)
	}
	return dst
}

// cloneBytes copies b so a decoded message does not alias the packet
// buffer; empty gives nil.
func cloneBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte{}, b...)
}
