package wire

// ChangeUser is COM_CHANGE_USER: re-authenticate as another user on the
// same connection.
//
//	int<1>      0x11
//	string<NUL> user
//	auth data:  int<1> length + bytes with CLIENT_SECURE_CONNECTION, else string<NUL>
//	string<NUL> schema
//	if more data:
//	  int<2>      character set
//	  string<NUL> auth plugin name      if CLIENT_PLUGIN_AUTH
//	  int<lenenc> attributes length + key/value pairs if CLIENT_CONNECT_ATTRS
type ChangeUser struct {
	User         string
	AuthResponse []byte // secret-bearing: never log it
	Schema       string
	CharacterSet uint16
	AuthPlugin   string
	Attributes   []Attribute
}

func (*ChangeUser) Type() CommandType { return ComChangeUser }

func (u *ChangeUser) decode(body []byte, caps Capabilities) error {
	c := cursor{b: body}
	u.User = c.nulString("user")
	if caps.Has(ClientSecureConnection) {
		n := int(c.uint8("auth response length"))
		u.AuthResponse = cloneBytes(c.take("auth response", n))
	} else {
		u.AuthResponse = cloneBytes(c.nulBytes("auth response"))
	}
	u.Schema = c.nulString("schema")
	if c.err != nil || c.left() == 0 {
		return c.err
	}
	u.CharacterSet = c.uint16("character set")
	if caps.Has(ClientPluginAuth) && c.left() > 0 {
		u.AuthPlugin = c.nulString("auth plugin name")
	}
	if caps.Has(ClientConnectAttrs) && c.left() > 0 {
		u.Attributes = decodeAttributes(&c)
	}
	return c.done("COM_CHANGE_USER")
}

func (u *ChangeUser) Encode(dst []byte, caps Capabilities) ([]byte, error) {
	dst = AppendNulString(append(dst, byte(ComChangeUser)), u.User)
	if caps.Has(ClientSecureConnection) {
		if len(u.AuthResponse) > 255 {
			return dst, malformed("COM_CHANGE_USER auth response of %d bytes exceeds 255", len(u.AuthResponse))
		}
		dst = append(append(dst, byte(len(u.AuthResponse))), u.AuthResponse...)
	} else {
		dst = append(append(dst, u.AuthResponse...), 0)
	}
	dst = AppendNulString(dst, u.Schema)
	dst = appendUint16(dst, u.CharacterSet)
	if caps.Has(ClientPluginAuth) {
		dst = AppendNulString(dst, u.AuthPlugin)
	}
	if caps.Has(ClientConnectAttrs) {
		dst = appendAttributes(dst, u.Attributes)
	}
	return dst, nil
}
