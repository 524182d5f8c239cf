package wire

// AuthSwitchRequest asks the client to authenticate with another plugin
// (Protocol::AuthSwitchRequest):
//
//	int<1>      0xfe
//	string<NUL> plugin name
//	string<EOF> plugin data (mysql_native_password: 20-byte scramble and a NUL;
//	            client_ed25519: a 32-byte nonce)
//
// A lone 0xfe is the old switch to mysql_old_password, which Decode reports
// with that plugin name and no data.
type AuthSwitchRequest struct {
	PluginName string
	PluginData []byte
}

// AuthSwitchHeader is the first byte of an AuthSwitchRequest.
const AuthSwitchHeader = 0xfe

// Decode parses an AuthSwitchRequest.
func (a *AuthSwitchRequest) Decode(src []byte) error {
	*a = AuthSwitchRequest{}
	c := cursor{b: src}
	if h := c.uint8("auth switch header"); c.err == nil && h != AuthSwitchHeader {
		return malformed("auth switch request header 0x%02x, want 0xfe", h)
	}
	if c.err == nil && c.left() == 0 {
		a.PluginName = "mysql_old_password"
		return nil
	}
	a.PluginName = c.nulString("plugin name")
	a.PluginData = cloneBytes(c.rest())
	return c.err
}

// Encode appends the request's payload to dst.
func (a *AuthSwitchRequest) Encode(dst []byte) []byte {
	dst = append(dst, AuthSwitchHeader)
	dst = AppendNulString(dst, a.PluginName)
	return append(dst, a.PluginData...)
}

// AuthMoreData carries plugin data from the server during authentication
// (Protocol::AuthMoreData): int<1> 0x01, then string<EOF> data. For
// caching_sha2_password the data is one byte: CachingSHA2FastAuthSuccess or
// CachingSHA2PerformFullAuth.
type AuthMoreData struct {
	Data []byte
}

// AuthMoreDataHeader is the first byte of an AuthMoreData packet.
const AuthMoreDataHeader = 0x01

// caching_sha2_password's AuthMoreData values and client requests.
const (
	CachingSHA2FastAuthSuccess  = 0x03 // the scramble matched the server's cache
	CachingSHA2PerformFullAuth  = 0x04 // the client must send the password (over TLS) or encrypt it
	CachingSHA2RequestPublicKey = 0x02 // client asks for the server's RSA key
)

// Decode parses an AuthMoreData packet.
func (a *AuthMoreData) Decode(src []byte) error {
	*a = AuthMoreData{}
	if len(src) == 0 || src[0] != AuthMoreDataHeader {
		return malformed("auth more data must start with 0x01")
	}
	a.Data = cloneBytes(src[1:])
	return nil
}

// Encode appends the packet's payload to dst.
func (a *AuthMoreData) Encode(dst []byte) []byte {
	return append(append(dst, AuthMoreDataHeader), a.Data...)
}
