package tds

import (
	"encoding/binary"
	"fmt"
)

// TDS versions as LOGIN7 and LOGINACK carry them.
const (
	Version71  uint32 = 0x71000001
	Version72  uint32 = 0x72090002
	Version73A uint32 = 0x730A0003
	Version73B uint32 = 0x730B0003
	Version74  uint32 = 0x74000004
)

// VersionName names a TDS version.
func VersionName(v uint32) string {
	switch v {
	case 0x70000000:
		return "7.0"
	case 0x71000000, Version71:
		return "7.1"
	case Version72:
		return "7.2"
	case Version73A:
		return "7.3A"
	case Version73B:
		return "7.3B"
	case Version74:
		return "7.4"
	case 0x08000000:
		return "8.0"
	}
	return fmt.Sprintf("0x%08X", v)
}

// LOGIN7 option flags.
const (
	// OptionFlags2
	FlagIntSecurity byte = 0x80
	// OptionFlags3
	FlagChangePassword byte = 0x01
	FlagExtension      byte = 0x10
	// TypeFlags
	FlagReadOnlyIntent byte = 0x20
)

// Feature extension ids of LOGIN7 (MS-TDS 2.2.6.4).
const (
	FeatureSessionRecovery    byte = 0x01
	FeatureFedAuth            byte = 0x02
	FeatureColumnEncryption   byte = 0x04
	FeatureGlobalTransactions byte = 0x05
	FeatureAzureSQLSupport    byte = 0x08
	FeatureDataClassification byte = 0x09
	FeatureUTF8Support        byte = 0x0A
	FeatureAzureSQLDNSCaching byte = 0x0B
	FeatureJSONSupport        byte = 0x0D
	FeatureVectorSupport      byte = 0x0E
	featureTerminator         byte = 0xFF
)

// Feature is one LOGIN7 feature extension.
type Feature struct {
	ID   byte
	Data []byte
}

// Login7 is a LOGIN7 message. Password and ChangePassword hold the decoded
// text: callers must never record them.
type Login7 struct {
	TDSVersion     uint32
	PacketSize     uint32
	ClientProgVer  uint32
	ClientPID      uint32
	ConnectionID   uint32
	OptionFlags1   byte
	OptionFlags2   byte
	TypeFlags      byte
	OptionFlags3   byte
	ClientTimeZone int32
	ClientLCID     uint32
	HostName       string
	UserName       string
	Password       string
	AppName        string
	ServerName     string
	CltIntName     string
	Language       string
	Database       string
	ClientID       [6]byte
	SSPI           []byte
	AtchDBFile     string
	ChangePassword string
	Features       []Feature
}

// IntegratedSecurity reports whether the client asked for Windows
// authentication (SSPI).
func (l *Login7) IntegratedSecurity() bool { return l.OptionFlags2&FlagIntSecurity != 0 }

// Feature returns a feature extension's data.
func (l *Login7) Feature(id byte) ([]byte, bool) {
	for _, f := range l.Features {
		if f.ID == id {
			return f.Data, true
		}
	}
	return nil, false
}

// login7 fixed-part lengths: 7.0 and 7.1 lack ibChangePassword and
// cbSSPILong.
const (
	login7Fixed   = 94
	login7Fixed71 = 86
	// MaxLogin7 is the largest LOGIN7 SQL Server accepts.
	MaxLogin7 = 128 << 10
)

// login7 variable fields: name, offset of its (ib, cch) pair in the fixed
// part, and the most characters SQL Server accepts.
var login7Fields = []struct {
	name string
	at   int
	max  int
}{
	{"HostName", 36, 128},
	{"UserName", 40, 128},
	{"Password", 44, 128},
	{"AppName", 48, 128},
	{"ServerName", 52, 128},
	{"Extension", 56, -1},
	{"CltIntName", 60, 128},
	{"Language", 64, 128},
	{"Database", 68, 128},
	{"SSPI", 78, -1},
	{"AtchDBFile", 82, 260},
	{"ChangePassword", 86, 128},
}

// ParseLogin7 decodes a LOGIN7 payload strictly: the length field matches
// the payload, the TDS version is known, every offset and length stays
// inside the message after the fixed part, and names are within SQL
// Server's limits. maxPassword bounds the password (0: 128 characters, as
// SQL Server; RDS Proxy takes IAM tokens there, which are longer).
func ParseLogin7(b []byte, maxPassword int) (*Login7, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("LOGIN7: %d bytes, shorter than its length field", len(b))
	}
	total := int(binary.LittleEndian.Uint32(b))
	if total != len(b) {
		return nil, fmt.Errorf("LOGIN7: length field says %d bytes but the message has %d", total, len(b))
	}
	if total > MaxLogin7 {
		return nil, fmt.Errorf("LOGIN7: %d bytes exceeds the %d-byte limit", total, MaxLogin7)
	}
	if len(b) < 8 {
		return nil, fmt.Errorf("LOGIN7: %d bytes, too short for its TDS version", len(b))
	}
	l := &Login7{TDSVersion: binary.LittleEndian.Uint32(b[4:])}
	fixed := login7Fixed
	switch l.TDSVersion {
	case Version72, Version73A, Version73B, Version74:
	case 0x71000000, Version71:
		fixed = login7Fixed71
	case 0x70000000:
		return nil, fmt.Errorf("LOGIN7: TDS 7.0 is not supported: use TDS 7.1 or later")
	default:
		return nil, fmt.Errorf("LOGIN7: unknown TDS version 0x%08X", l.TDSVersion)
	}
	if len(b) < fixed {
		return nil, fmt.Errorf("LOGIN7: %d bytes, shorter than the %d-byte fixed part of TDS %s", len(b), fixed, VersionName(l.TDSVersion))
	}
	l.PacketSize = binary.LittleEndian.Uint32(b[8:])
	l.ClientProgVer = binary.LittleEndian.Uint32(b[12:])
	l.ClientPID = binary.LittleEndian.Uint32(b[16:])
	l.ConnectionID = binary.LittleEndian.Uint32(b[20:])
	l.OptionFlags1, l.OptionFlags2, l.TypeFlags, l.OptionFlags3 = b[24], b[25], b[26], b[27]
	l.ClientTimeZone = int32(binary.LittleEndian.Uint32(b[28:]))
	l.ClientLCID = binary.LittleEndian.Uint32(b[32:])
	copy(l.ClientID[:], b[72:78])
	if l.PacketSize != 0 && (l.PacketSize < MinPacketSize || l.PacketSize > MaxPacketSize) {
		return nil, fmt.Errorf("LOGIN7: packet size %d is outside %d..%d", l.PacketSize, MinPacketSize, MaxPacketSize)
	}
	var sspiLong uint32
	if fixed == login7Fixed {
		sspiLong = binary.LittleEndian.Uint32(b[90:])
	}
	for _, f := range login7Fields {
		if f.at+4 > fixed {
			continue
		}
		ib := int(binary.LittleEndian.Uint16(b[f.at:]))
		cch := int(binary.LittleEndian.Uint16(b[f.at+2:]))
		size := 2 * cch
		switch f.name {
		case "Extension":
			// cbExtension counts bytes; without fExtension the pair
			// is unused but must still point inside the message.
			size = cch
		case "SSPI":
			size = cch
			if cch == 0xFFFF {
				if fixed != login7Fixed {
					return nil, fmt.Errorf("LOGIN7: cbSSPI 0xFFFF needs TDS 7.2 or later")
				}
				size = int(sspiLong)
			} else if sspiLong != 0 && cch != 0 {
				return nil, fmt.Errorf("LOGIN7: both cbSSPI (%d) and cbSSPILong (%d) are set", cch, sspiLong)
			}
		}
		if f.max > 0 {
			limit := f.max
			if f.name == "Password" && maxPassword > 0 {
				limit = maxPassword
			}
			if cch > limit {
				return nil, fmt.Errorf("LOGIN7: %s has %d characters, more than the %d allowed", f.name, cch, limit)
			}
		}
		if size == 0 {
			continue
		}
		if ib < fixed {
			return nil, fmt.Errorf("LOGIN7: %s offset %d points into the %d-byte fixed part", f.name, ib, fixed)
		}
		if ib+size > total {
			return nil, fmt.Errorf("LOGIN7: %s (offset %d, %d bytes) runs past the %d-byte message", f.name, ib, size, total)
		}
		v := b[ib : ib+size]
		switch f.name {
		case "HostName":
			l.HostName = DecodeUCS2(v)
		case "UserName":
			l.UserName = DecodeUCS2(v)
		case "Password":
			l.Password = DecodeUCS2(decodePassword(v))
		case "AppName":
			l.AppName = DecodeUCS2(v)
		case "ServerName":
			l.ServerName = DecodeUCS2(v)
		case "Extension":
			if l.OptionFlags3&FlagExtension == 0 {
				continue
			}
			if size != 4 {
				return nil, fmt.Errorf("LOGIN7: feature extension pointer has %d bytes, want 4", size)
			}
			fo := int(binary.LittleEndian.Uint32(v))
			if fo < fixed || fo >= total {
				return nil, fmt.Errorf("LOGIN7: feature extension offset %d is outside the message (%d..%d)", fo, fixed, total)
			}
			fs, err := parseFeatures(b[fo:])
			if err != nil {
				return nil, err
			}
			l.Features = fs
		case "CltIntName":
			l.CltIntName = DecodeUCS2(v)
		case "Language":
			l.Language = DecodeUCS2(v)
		case "Database":
			l.Database = DecodeUCS2(v)
		case "SSPI":
			l.SSPI = v
		case "AtchDBFile":
			l.AtchDBFile = DecodeUCS2(v)
		case "ChangePassword":
			l.ChangePassword = DecodeUCS2(decodePassword(v))
		}
	}
	if l.OptionFlags3&FlagExtension != 0 && l.Features == nil {
		return nil, fmt.Errorf("LOGIN7: fExtension is set but there is no feature extension block")
	}
	return l, nil
}

func parseFeatures(b []byte) ([]Feature, error) {
	fs := []Feature{}
	for i := 0; ; {
		if i >= len(b) {
			return nil, fmt.Errorf("LOGIN7: feature extension block has no terminator")
		}
		id := b[i]
		if id == featureTerminator {
			return fs, nil
		}
		if i+5 > len(b) {
			return nil, fmt.Errorf("LOGIN7: feature 0x%02X header is truncated", id)
		}
		n := int(binary.LittleEndian.Uint32(b[i+1:]))
		if n < 0 || i+5+n > len(b) {
			return nil, fmt.Errorf("LOGIN7: feature 0x%02X data (%d bytes) runs past the message", id, n)
		}
		fs = append(fs, Feature{ID: id, Data: b[i+5 : i+5+n]})
		i += 5 + n
	}
}

// decodePassword undoes LOGIN7's password scrambling: each byte XORed with
// 0xA5, then its nibbles swapped back.
func decodePassword(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		c ^= 0xA5
		out[i] = c<<4 | c>>4
	}
	return out
}

// EncodePassword scrambles UCS-2 password bytes as LOGIN7 carries them.
func EncodePassword(ucs2 []byte) []byte {
	out := make([]byte, len(ucs2))
	for i, c := range ucs2 {
		out[i] = (c<<4 | c>>4) ^ 0xA5
	}
	return out
}

// Append encodes the login (as TDS 7.2 or later: the 94-byte fixed part).
func (l *Login7) Append(dst []byte) ([]byte, error) {
	if l.TDSVersion < Version72 {
		return nil, fmt.Errorf("LOGIN7: encoding TDS %s is not supported", VersionName(l.TDSVersion))
	}
	start := len(dst)
	dst = append(dst, make([]byte, login7Fixed)...)
	h := dst[start:]
	le32(h[4:], l.TDSVersion)
	le32(h[8:], l.PacketSize)
	le32(h[12:], l.ClientProgVer)
	le32(h[16:], l.ClientPID)
	le32(h[20:], l.ConnectionID)
	flags3 := l.OptionFlags3 &^ FlagExtension
	if len(l.Features) > 0 {
		flags3 |= FlagExtension
	}
	h[24], h[25], h[26], h[27] = l.OptionFlags1, l.OptionFlags2, l.TypeFlags, flags3
	le32(h[28:], uint32(l.ClientTimeZone))
	le32(h[32:], l.ClientLCID)
	copy(h[72:78], l.ClientID[:])
	var extAt int
	put := func(at int, data []byte, count int) {
		le16(dst[start+at:], uint16(len(dst)-start))
		le16(dst[start+at+2:], uint16(count))
		dst = append(dst, data...)
	}
	str := func(at int, s string, password bool) error {
		b := AppendUCS2(nil, s)
		if len(b)/2 > 0xFFFF {
			return fmt.Errorf("LOGIN7: field too long")
		}
		if password {
			b = EncodePassword(b)
		}
		put(at, b, len(b)/2)
		return nil
	}
	for _, f := range []struct {
		at  int
		s   string
		pwd bool
	}{{36, l.HostName, false}, {40, l.UserName, false}, {44, l.Password, true}, {48, l.AppName, false}, {52, l.ServerName, false}} {
		if err := str(f.at, f.s, f.pwd); err != nil {
			return nil, err
		}
	}
	if len(l.Features) > 0 {
		extAt = len(dst) - start
		put(56, []byte{0, 0, 0, 0}, 4)
	} else {
		put(56, nil, 0)
	}
	for _, f := range []struct {
		at int
		s  string
	}{{60, l.CltIntName}, {64, l.Language}, {68, l.Database}} {
		if err := str(f.at, f.s, false); err != nil {
			return nil, err
		}
	}
	if len(l.SSPI) < 0xFFFF {
		put(78, l.SSPI, len(l.SSPI))
	} else {
		put(78, l.SSPI, 0xFFFF)
		le32(dst[start+90:], uint32(len(l.SSPI)))
	}
	if err := str(82, l.AtchDBFile, false); err != nil {
		return nil, err
	}
	if err := str(86, l.ChangePassword, true); err != nil {
		return nil, err
	}
	if len(l.Features) > 0 {
		le32(dst[start+extAt:], uint32(len(dst)-start))
		for _, f := range l.Features {
			dst = append(dst, f.ID)
			dst = appendU32(dst, uint32(len(f.Data)))
			dst = append(dst, f.Data...)
		}
		dst = append(dst, featureTerminator)
	}
	le32(dst[start:], uint32(len(dst)-start))
	return dst, nil
}
