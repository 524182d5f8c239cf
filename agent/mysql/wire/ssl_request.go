package wire

// SSLRequest is the short form of the handshake response a client sends
// with CLIENT_SSL to ask for TLS before it authenticates
// (Protocol::SSLRequest): the 32-byte head of a HandshakeResponse41 and
// nothing else.
//
//	int<4>     client capability flags (CLIENT_SSL set)
//	int<4>     max packet size
//	int<1>     character set
//	string[19] filler
//	int<4>     MariaDB: extended capabilities if CLIENT_MYSQL is clear, else filler
type SSLRequest struct {
	Capabilities  Capabilities
	MaxPacketSize uint32
	CharacterSet  uint8
}

// IsSSLRequest reports whether a client's first payload is an SSLRequest
// rather than a full HandshakeResponse41.
func IsSSLRequest(payload []byte) bool {
	return len(payload) == sslRequestLen && Capabilities(payload[1])<<8&ClientSSL != 0
}

// Decode parses an SSLRequest; it must be exactly 32 bytes with CLIENT_SSL.
func (s *SSLRequest) Decode(src []byte) error {
	*s = SSLRequest{}
	if len(src) != sslRequestLen {
		return malformed("SSLRequest of %d bytes, want %d", len(src), sslRequestLen)
	}
	c := cursor{b: src}
	s.Capabilities, s.MaxPacketSize, s.CharacterSet = decodeClientHead(&c)
	if !s.Capabilities.Has(ClientSSL) {
		return malformed("SSLRequest without CLIENT_SSL")
	}
	return c.err
}

// Encode appends the SSLRequest's 32 bytes to dst; CLIENT_SSL is set
// whatever Capabilities say.
func (s *SSLRequest) Encode(dst []byte) []byte {
	return appendClientHead(dst, s.Capabilities|ClientSSL, s.MaxPacketSize, s.CharacterSet)
}
