package postgres

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Type OIDs whose binary form the audit decodes into text.
const (
	oidBool        = 16
	oidBytea       = 17
	oidChar        = 18
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidBPChar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestampTZ = 1184
	oidNumeric     = 1700
	oidUUID        = 2950
	oidJSONB       = 3802
)

// nullParam stands for an SQL NULL parameter.
const nullParam = "NULL"

// renderParam renders one bound parameter as text for the audit: text
// format as sent, binary decoded by type OID where the type is known,
// otherwise base64. bytea is always base64. The result is cut to max bytes;
// truncated reports whether it was.
func renderParam(v []byte, binaryFormat bool, oid uint32, max int) (s string, truncated bool) {
	if v == nil {
		return nullParam, false
	}
	switch {
	case !binaryFormat && oid != oidBytea:
		if len(v) > max {
			return validPrefix(v[:max]), true
		}
		return string(v), false
	case !binaryFormat:
		// bytea in text form is already an escaped rendering.
		if len(v) > max {
			return validPrefix(v[:max]), true
		}
		return string(v), false
	}
	if s, ok := decodeBinary(v, oid); ok {
		if len(s) > max {
			return validPrefix([]byte(s[:max])), true
		}
		return s, false
	}
	if base64.StdEncoding.EncodedLen(len(v)) > max {
		n := max / 4 * 3
		return base64.StdEncoding.EncodeToString(v[:n]), true
	}
	return base64.StdEncoding.EncodeToString(v), false
}

// validPrefix cuts a trailing partial UTF-8 sequence so the rendering stays
// valid JSON text.
func validPrefix(b []byte) string {
	for i := 0; i < 3 && len(b) > 0 && !utf8.Valid(b); i++ {
		b = b[:len(b)-1]
	}
	return string(b)
}

// pgEpoch is 2000-01-01, the zero of PostgreSQL's binary dates and times.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func decodeBinary(v []byte, oid uint32) (string, bool) {
	switch oid {
	case oidBool:
		if len(v) == 1 {
			return strconv.FormatBool(v[0] != 0), true
		}
	case oidInt2:
		if len(v) == 2 {
			return strconv.FormatInt(int64(int16(binary.BigEndian.Uint16(v))), 10), true
		}
	case oidInt4:
		if len(v) == 4 {
			return strconv.FormatInt(int64(int32(binary.BigEndian.Uint32(v))), 10), true
		}
	case oidOID:
		if len(v) == 4 {
			return strconv.FormatUint(uint64(binary.BigEndian.Uint32(v)), 10), true
		}
	case oidInt8:
		if len(v) == 8 {
			return strconv.FormatInt(int64(binary.BigEndian.Uint64(v)), 10), true
		}
	case oidFloat4:
		if len(v) == 4 {
			return strconv.FormatFloat(float64(math.Float32frombits(binary.BigEndian.Uint32(v))), 'g', -1, 32), true
		}
	case oidFloat8:
		if len(v) == 8 {
			return strconv.FormatFloat(math.Float64frombits(binary.BigEndian.Uint64(v)), 'g', -1, 64), true
		}
	case oidText, oidVarchar, oidBPChar, oidName, oidChar, oidJSON:
		if utf8.Valid(v) {
			return string(v), true
		}
	case oidJSONB:
		if len(v) >= 1 && v[0] == 1 && utf8.Valid(v[1:]) {
			return string(v[1:]), true
		}
	case oidUUID:
		if len(v) == 16 {
			var b [36]byte
			hex.Encode(b[0:8], v[0:4])
			b[8] = '-'
			hex.Encode(b[9:13], v[4:6])
			b[13] = '-'
			hex.Encode(b[14:18], v[6:8])
			b[18] = '-'
			hex.Encode(b[19:23], v[8:10])
			b[23] = '-'
			hex.Encode(b[24:36], v[10:16])
			return string(b[:]), true
		}
	case oidDate:
		if len(v) == 4 {
			days := int32(binary.BigEndian.Uint32(v))
			switch days {
			case math.MaxInt32:
				return "infinity", true
			case math.MinInt32:
				return "-infinity", true
			}
			return pgEpoch.AddDate(0, 0, int(days)).Format("2006-01-02"), true
		}
	case oidTimestamp, oidTimestampTZ:
		if len(v) == 8 {
			us := int64(binary.BigEndian.Uint64(v))
			switch us {
			case math.MaxInt64:
				return "infinity", true
			case math.MinInt64:
				return "-infinity", true
			}
			t := pgEpoch.Add(time.Duration(us/1e6) * time.Second).Add(time.Duration(us%1e6) * time.Microsecond)
			if oid == oidTimestamp {
				return t.Format("2006-01-02 15:04:05.999999"), true
			}
			return t.Format("2006-01-02 15:04:05.999999Z07:00"), true
		}
	case oidNumeric:
		return decodeNumeric(v)
	}
	return "", false
}

// decodeNumeric renders PostgreSQL's binary numeric: ndigits, weight, sign
// and dscale as int16s, then base-10000 digits.
func decodeNumeric(v []byte) (string, bool) {
	if len(v) < 8 {
		return "", false
	}
	ndigits := int(binary.BigEndian.Uint16(v[0:]))
	weight := int(int16(binary.BigEndian.Uint16(v[2:])))
	sign := binary.BigEndian.Uint16(v[4:])
	dscale := int(binary.BigEndian.Uint16(v[6:]))
	if len(v) != 8+2*ndigits || dscale > 16383 {
		return "", false
	}
	switch sign {
	case 0xC000:
		return "NaN", true
	case 0xD000:
		return "Infinity", true
	case 0xF000:
		return "-Infinity", true
	case 0x0000, 0x4000:
	default:
		return "", false
	}
	if ndigits == 0 {
		if dscale == 0 {
			return "0", true
		}
		return "0." + strings.Repeat("0", dscale), true
	}
	// value = sum(d[i] * 10000^(weight-i)); scale it to an integer of
	// 10^(dscale) units, then place the decimal point.
	n := new(big.Int)
	tenK := big.NewInt(10000)
	for i := range ndigits {
		d := binary.BigEndian.Uint16(v[8+2*i:])
		if d >= 10000 {
			return "", false
		}
		n.Mul(n, tenK)
		n.Add(n, big.NewInt(int64(d)))
	}
	// n currently holds digits with (ndigits-1-weight) groups after the
	// point; convert to exactly dscale decimal places.
	frac := 4 * (ndigits - 1 - weight)
	if frac < -4*1000 || frac > 4*1000 {
		return "", false
	}
	switch {
	case frac > dscale:
		n.Quo(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(frac-dscale)), nil))
	case frac < dscale:
		n.Mul(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(dscale-frac)), nil))
	}
	s := n.String()
	if dscale > 0 {
		if len(s) <= dscale {
			s = strings.Repeat("0", dscale-len(s)+1) + s
		}
		s = s[:len(s)-dscale] + "." + s[len(s)-dscale:]
	}
	if sign == 0x4000 {
		s = "-" + s
	}
	return s, true
}
