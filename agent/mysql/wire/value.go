package wire

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Value is one parameter or column value in text form.
//
// Numbers are decimal; FLOAT and DOUBLE use the shortest text that reads
// back to the same value. DATE is YYYY-MM-DD; DATETIME and TIMESTAMP are
// YYYY-MM-DD HH:MM:SS with .ffffff when the microseconds are not zero; TIME
// is [-]HH:MM:SS[.ffffff] with hours that may exceed 24 (days folded in).
// DECIMAL, strings, JSON, ENUM and SET are their bytes. Bytes that are not
// valid UTF-8 are in standard base64 and Base64 is true.
type Value struct {
	Null   bool
	Text   string
	Base64 bool
}

// AuditText renders the value as one string for an audit record: "NULL"
// for NULL, "base64:" and the encoding for non-UTF-8 bytes, else Text.
func (v Value) AuditText() string {
	switch {
	case v.Null:
		return "NULL"
	case v.Base64:
		return "base64:" + v.Text
	}
	return v.Text
}

// bytesValue turns raw bytes into a Value: as text if valid UTF-8, else
// base64.
func bytesValue(b []byte) Value {
	if utf8.Valid(b) {
		return Value{Text: string(b)}
	}
	return Value{Text: base64.StdEncoding.EncodeToString(b), Base64: true}
}

// Raw returns the bytes the value stands for (decoding base64).
func (v Value) Raw() ([]byte, error) {
	if v.Base64 {
		b, err := base64.StdEncoding.DecodeString(v.Text)
		if err != nil {
			return nil, malformed("value marked base64 is not base64: %v", err)
		}
		return b, nil
	}
	return []byte(v.Text), nil
}

// knownBinaryType reports whether t may appear in the binary protocol.
func knownBinaryType(t FieldType) bool {
	_, ok := fieldTypeNames[t]
	return ok
}

// valueWhat names each type's value for error messages without building
// the string on the hot path.
var valueWhat = func() (w [256]string) {
	for i := range w {
		w[i] = FieldType(i).String() + " value"
	}
	return w
}()

// readBinaryValue decodes one value of type t in the binary protocol
// (ProtocolBinary::*). scratch is reused for number formatting.
func readBinaryValue(c *cursor, t FieldType, unsigned bool, scratch []byte) (Value, []byte) {
	what := valueWhat[t]
	s := scratch[:0]
	switch t {
	case TypeNull:
		return Value{Null: true}, scratch
	case TypeTiny:
		b := c.uint8(what)
		if unsigned {
			s = strconv.AppendUint(s, uint64(b), 10)
		} else {
			s = strconv.AppendInt(s, int64(int8(b)), 10)
		}
	case TypeShort, TypeYear:
		v := c.uint16(what)
		if unsigned || t == TypeYear {
			s = strconv.AppendUint(s, uint64(v), 10)
		} else {
			s = strconv.AppendInt(s, int64(int16(v)), 10)
		}
	case TypeLong, TypeInt24:
		v := c.uint32(what)
		if unsigned {
			s = strconv.AppendUint(s, uint64(v), 10)
		} else {
			s = strconv.AppendInt(s, int64(int32(v)), 10)
		}
	case TypeLongLong:
		v := c.uint64(what)
		if unsigned {
			s = strconv.AppendUint(s, v, 10)
		} else {
			s = strconv.AppendInt(s, int64(v), 10)
		}
	case TypeFloat:
		v := math.Float32frombits(c.uint32(what))
		s = strconv.AppendFloat(s, float64(v), 'g', -1, 32)
	case TypeDouble:
		v := math.Float64frombits(c.uint64(what))
		s = strconv.AppendFloat(s, v, 'g', -1, 64)
	case TypeDate, TypeNewDate, TypeDateTime, TypeTimestamp, TypeDateTime2, TypeTimestamp2:
		s = readBinaryDate(c, t, s)
	case TypeTime, TypeTime2:
		s = readBinaryTime(c, s)
	default:
		// DECIMAL, NEWDECIMAL, strings, blobs, JSON, ENUM, SET, BIT,
		// GEOMETRY, VECTOR: string<lenenc>.
		b := c.lenEncBytes(what)
		if c.err != nil {
			return Value{}, scratch
		}
		return bytesValue(b), scratch
	}
	if c.err != nil {
		return Value{}, s
	}
	return Value{Text: string(s)}, s
}

func appendPadded(dst []byte, v uint64, width int) []byte {
	var tmp [20]byte
	b := strconv.AppendUint(tmp[:0], v, 10)
	for i := len(b); i < width; i++ {
		dst = append(dst, '0')
	}
	return append(dst, b...)
}

// readBinaryDate decodes a DATE/DATETIME/TIMESTAMP: int<1> length (0, 4, 7
// or 11), int<2> year, int<1> month, day, hour, minute, second, int<4>
// microsecond.
func readBinaryDate(c *cursor, t FieldType, s []byte) []byte {
	n := c.uint8(t.String() + " length")
	if c.err != nil {
		return s
	}
	if n != 0 && n != 4 && n != 7 && n != 11 {
		c.err = malformed("%s value of length %d, want 0, 4, 7 or 11", t, n)
		return s
	}
	var year, month, day, hour, minute, second, micro uint64
	if n >= 4 {
		year = uint64(c.uint16("year"))
		month = uint64(c.uint8("month"))
		day = uint64(c.uint8("day"))
	}
	if n >= 7 {
		hour, minute, second, micro = readClock(c, t.String(), n == 11)
	}
	s = appendPadded(s, year, 4)
	s = append(s, '-')
	s = appendPadded(s, month, 2)
	s = append(s, '-')
	s = appendPadded(s, day, 2)
	if t == TypeDate || t == TypeNewDate {
		return s
	}
	s = append(s, ' ')
	return appendClock(s, hour, minute, second, micro)
}

// readBinaryTime decodes a TIME: int<1> length (0, 8 or 12), int<1>
// is_negative, int<4> days, int<1> hour, minute, second, int<4> microsecond.
func readBinaryTime(c *cursor, s []byte) []byte {
	n := c.uint8("TIME length")
	if c.err != nil {
		return s
	}
	if n != 0 && n != 8 && n != 12 {
		c.err = malformed("TIME value of length %d, want 0, 8 or 12", n)
		return s
	}
	var neg uint8
	var days, hour, minute, second, micro uint64
	if n >= 8 {
		neg = c.uint8("is_negative")
		days = uint64(c.uint32("days"))
		hour, minute, second, micro = readClock(c, "TIME", n == 12)
	}
	if neg == 1 {
		s = append(s, '-')
	}
	return appendClock(s, days*24+hour, minute, second, micro)
}

// readClock reads the int<1> hour, minute and second of a binary DATETIME
// or TIME value, then its int<4> microsecond when withMicro is set (the
// value's longer form); what names the type in an error.
func readClock(c *cursor, what string, withMicro bool) (hour, minute, second, micro uint64) {
	hour = uint64(c.uint8("hour"))
	minute = uint64(c.uint8("minute"))
	second = uint64(c.uint8("second"))
	if withMicro {
		micro = uint64(c.uint32("microsecond"))
	}
	if micro > 999999 && c.err == nil {
		c.err = malformed("%s microsecond %d out of range", what, micro)
	}
	return hour, minute, second, micro
}

// appendClock appends hh:mm:ss, with .ffffff when micro is not zero: the
// time of day of a DATETIME and the text of a TIME.
func appendClock(s []byte, hour, minute, second, micro uint64) []byte {
	s = appendPadded(s, hour, 2)
	s = append(s, ':')
	s = appendPadded(s, minute, 2)
	s = append(s, ':')
	s = appendPadded(s, second, 2)
	if micro != 0 {
		s = append(s, '.')
		s = appendPadded(s, micro, 6)
	}
	return s
}

// appendBinaryValue encodes v as type t in the binary protocol: the inverse
// of readBinaryValue. NULL values have no bytes (the NULL bitmap says so).
func appendBinaryValue(dst []byte, t FieldType, unsigned bool, v Value) ([]byte, error) {
	if v.Null || t == TypeNull {
		return dst, nil
	}
	bad := func(err error) ([]byte, error) {
		return dst, malformed("%s value %q: %v", t, v.Text, err)
	}
	parseInt := func(bits int) (uint64, error) {
		if unsigned || t == TypeYear {
			return strconv.ParseUint(v.Text, 10, bits)
		}
		i, err := strconv.ParseInt(v.Text, 10, bits)
		return uint64(i), err
	}
	switch t {
	case TypeTiny:
		i, err := parseInt(8)
		if err != nil {
			return bad(err)
		}
		return append(dst, byte(i)), nil
	case TypeShort, TypeYear:
		i, err := parseInt(16)
		if err != nil {
			return bad(err)
		}
		return appendUint16(dst, uint16(i)), nil
	case TypeLong, TypeInt24:
		i, err := parseInt(32)
		if err != nil {
			return bad(err)
		}
		return appendUint32(dst, uint32(i)), nil
	case TypeLongLong:
		i, err := parseInt(64)
		if err != nil {
			return bad(err)
		}
		return appendUint64(dst, i), nil
	case TypeFloat:
		f, err := strconv.ParseFloat(v.Text, 32)
		if err != nil {
			return bad(err)
		}
		return appendUint32(dst, math.Float32bits(float32(f))), nil
	case TypeDouble:
		f, err := strconv.ParseFloat(v.Text, 64)
		if err != nil {
			return bad(err)
		}
		return appendUint64(dst, math.Float64bits(f)), nil
	case TypeDate, TypeNewDate, TypeDateTime, TypeTimestamp, TypeDateTime2, TypeTimestamp2:
		out, err := appendBinaryDate(dst, v.Text)
		if err != nil {
			return bad(err)
		}
		return out, nil
	case TypeTime, TypeTime2:
		out, err := appendBinaryTime(dst, v.Text)
		if err != nil {
			return bad(err)
		}
		return out, nil
	default:
		if !knownBinaryType(t) {
			return dst, malformed("unknown parameter type 0x%02x", uint8(t))
		}
		raw, err := v.Raw()
		if err != nil {
			return dst, err
		}
		return AppendLenEncBytes(dst, raw), nil
	}
}

type parseError string

func (e parseError) Error() string { return string(e) }

// splitNumbers parses "a<sep>b<sep>c" into numbers.
func splitNumbers(s string, sep byte, n int) ([]uint64, error) {
	parts := strings.Split(s, string(sep))
	if len(parts) != n {
		return nil, parseError("want " + strconv.Itoa(n) + " fields separated by " + string(sep))
	}
	out := make([]uint64, n)
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// parseClock parses HH:MM:SS[.ffffff] (hours unbounded).
func parseClock(s string) (h, m, sec, micro uint64, err error) {
	if i := strings.IndexByte(s, '.'); i >= 0 {
		frac := s[i+1:]
		if len(frac) == 0 || len(frac) > 6 {
			return 0, 0, 0, 0, parseError("fraction of 1 to 6 digits expected")
		}
		micro, err = strconv.ParseUint(frac+strings.Repeat("0", 6-len(frac)), 10, 32)
		if err != nil {
			return 0, 0, 0, 0, err
		}
		s = s[:i]
	}
	f, err := splitNumbers(s, ':', 3)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	if f[1] > 255 || f[2] > 255 {
		return 0, 0, 0, 0, parseError("minute or second out of range")
	}
	return f[0], f[1], f[2], micro, nil
}

func appendBinaryDate(dst []byte, s string) ([]byte, error) {
	datePart, clock, hasClock := strings.Cut(s, " ")
	d, err := splitNumbers(datePart, '-', 3)
	if err != nil {
		return dst, err
	}
	if d[0] > 0xffff || d[1] > 255 || d[2] > 255 {
		return dst, parseError("date field out of range")
	}
	var h, m, sec, micro uint64
	if hasClock {
		if h, m, sec, micro, err = parseClock(clock); err != nil {
			return dst, err
		}
		if h > 255 {
			return dst, parseError("hour out of range")
		}
	}
	switch {
	case micro != 0:
		dst = append(dst, 11)
	case h|m|sec != 0:
		dst = append(dst, 7)
	case d[0]|d[1]|d[2] != 0:
		dst = append(dst, 4)
	default:
		return append(dst, 0), nil
	}
	n := dst[len(dst)-1]
	dst = appendUint16(dst, uint16(d[0]))
	dst = append(dst, byte(d[1]), byte(d[2]))
	if n >= 7 {
		dst = append(dst, byte(h), byte(m), byte(sec))
	}
	if n == 11 {
		dst = appendUint32(dst, uint32(micro))
	}
	return dst, nil
}

func appendBinaryTime(dst []byte, s string) ([]byte, error) {
	neg := strings.HasPrefix(s, "-")
	h, m, sec, micro, err := parseClock(strings.TrimPrefix(s, "-"))
	if err != nil {
		return dst, err
	}
	days := h / 24
	if days > math.MaxUint32 {
		return dst, parseError("hours out of range")
	}
	switch {
	case micro != 0:
		dst = append(dst, 12)
	case neg || h|m|sec != 0:
		dst = append(dst, 8)
	default:
		return append(dst, 0), nil
	}
	var negByte byte
	if neg {
		negByte = 1
	}
	dst = append(dst, negByte)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(days))
	dst = append(dst, byte(h%24), byte(m), byte(sec))
	if micro != 0 {
		dst = appendUint32(dst, uint32(micro))
	}
	return dst, nil
}
