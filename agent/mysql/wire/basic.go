package wire

import (
	"bytes"
	"encoding/binary"
)

// The protocol's basic data types: fixed-length integers int<n> (little
// endian), length-encoded integers int<lenenc>, and strings that are
// length-encoded (string<lenenc>), NUL-terminated (string<NUL>), fixed
// (string<n>) or run to the end of the packet (string<EOF>).

// Length-encoded integer prefixes.
const (
	lenencNull = 0xfb // NULL in a text row; not a valid integer prefix elsewhere
	lenenc2    = 0xfc // followed by int<2>
	lenenc3    = 0xfd // followed by int<3>
	lenenc8    = 0xfe // followed by int<8>
)

// ReadLenEncInt decodes an int<lenenc> at the start of b and returns the
// value, whether it was the NULL marker 0xfb, and the bytes consumed.
// 0xff (the ERR marker) is never a valid prefix.
func ReadLenEncInt(b []byte) (v uint64, null bool, n int, err error) {
	if len(b) == 0 {
		return 0, false, 0, malformed("length-encoded integer: no bytes")
	}
	switch p := b[0]; {
	case p < lenencNull:
		return uint64(p), false, 1, nil
	case p == lenencNull:
		return 0, true, 1, nil
	case p == lenenc2:
		if len(b) < 3 {
			return 0, false, 0, malformed("length-encoded integer 0xfc needs 2 more bytes, have %d", len(b)-1)
		}
		return uint64(binary.LittleEndian.Uint16(b[1:])), false, 3, nil
	case p == lenenc3:
		if len(b) < 4 {
			return 0, false, 0, malformed("length-encoded integer 0xfd needs 3 more bytes, have %d", len(b)-1)
		}
		return uint64(b[1]) | uint64(b[2])<<8 | uint64(b[3])<<16, false, 4, nil
	case p == lenenc8:
		if len(b) < 9 {
			return 0, false, 0, malformed("length-encoded integer 0xfe needs 8 more bytes, have %d", len(b)-1)
		}
		return binary.LittleEndian.Uint64(b[1:]), false, 9, nil
	default:
		return 0, false, 0, malformed("length-encoded integer: invalid first byte 0xff")
	}
}

// LenEncIntSize returns how many bytes AppendLenEncInt writes for v.
func LenEncIntSize(v uint64) int {
	switch {
	case v < lenencNull:
		return 1
	case v < 1<<16:
		return 3
	case v < 1<<24:
		return 4
	default:
		return 9
	}
}

// AppendLenEncInt appends v as an int<lenenc>: one byte below 0xfb, else a
// prefix 0xfc, 0xfd or 0xfe followed by 2, 3 or 8 bytes.
func AppendLenEncInt(dst []byte, v uint64) []byte {
	switch {
	case v < lenencNull:
		return append(dst, byte(v))
	case v < 1<<16:
		return append(dst, lenenc2, byte(v), byte(v>>8))
	case v < 1<<24:
		return append(dst, lenenc3, byte(v), byte(v>>8), byte(v>>16))
	default:
		return binary.LittleEndian.AppendUint64(append(dst, lenenc8), v)
	}
}

// ReadLenEncString decodes a string<lenenc> at the start of b. The returned
// slice aliases b. A NULL marker gives null=true and n=1.
func ReadLenEncString(b []byte) (s []byte, null bool, n int, err error) {
	l, null, n, err := ReadLenEncInt(b)
	if err != nil || null {
		return nil, null, n, err
	}
	if l > uint64(len(b)-n) {
		return nil, false, 0, malformed("length-encoded string of %d bytes, only %d left", l, len(b)-n)
	}
	return b[n : n+int(l)], false, n + int(l), nil
}

// AppendLenEncString appends s as a string<lenenc>.
func AppendLenEncString(dst []byte, s string) []byte {
	return append(AppendLenEncInt(dst, uint64(len(s))), s...)
}

// AppendLenEncBytes appends s as a string<lenenc>.
func AppendLenEncBytes(dst []byte, s []byte) []byte {
	return append(AppendLenEncInt(dst, uint64(len(s))), s...)
}

// ReadNulString decodes a string<NUL> at the start of b: the bytes before
// the first 0x00 (aliasing b), and the bytes consumed including the NUL.
func ReadNulString(b []byte) (s []byte, n int, err error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, 0, malformed("NUL-terminated string without its NUL in %d bytes", len(b))
	}
	return b[:i], i + 1, nil
}

// AppendNulString appends s followed by 0x00. s must not contain 0x00.
func AppendNulString(dst []byte, s string) []byte {
	return append(append(dst, s...), 0)
}

// cursor reads fields from a payload in order. The first failure sticks:
// later reads return zero values, and err names the first field that did
// not fit, so decoders read every field and check err once.
type cursor struct {
	b   []byte
	pos int
	err error
}

func (c *cursor) fail(what string, need int) {
	if c.err == nil {
		c.err = malformed("%s: need %d bytes at offset %d, have %d", what, need, c.pos, len(c.b)-c.pos)
	}
}

func (c *cursor) left() int { return len(c.b) - c.pos }

func (c *cursor) take(what string, n int) []byte {
	if c.err != nil {
		return nil
	}
	if n < 0 || n > len(c.b)-c.pos {
		c.fail(what, n)
		return nil
	}
	s := c.b[c.pos : c.pos+n]
	c.pos += n
	return s
}

func (c *cursor) uint8(what string) uint8 {
	if s := c.take(what, 1); s != nil {
		return s[0]
	}
	return 0
}

func (c *cursor) uint16(what string) uint16 {
	if s := c.take(what, 2); s != nil {
		return binary.LittleEndian.Uint16(s)
	}
	return 0
}

func (c *cursor) uint32(what string) uint32 {
	if s := c.take(what, 4); s != nil {
		return binary.LittleEndian.Uint32(s)
	}
	return 0
}

func (c *cursor) uint64(what string) uint64 {
	if s := c.take(what, 8); s != nil {
		return binary.LittleEndian.Uint64(s)
	}
	return 0
}

func (c *cursor) lenEncInt(what string) (uint64, bool) {
	if c.err != nil {
		return 0, false
	}
	v, null, n, err := ReadLenEncInt(c.b[c.pos:])
	if err != nil {
		c.err = malformed("%s at offset %d: %v", what, c.pos, unwrapMalformed(err))
		return 0, false
	}
	c.pos += n
	return v, null
}

// lenEncBytes reads a string<lenenc>; NULL is refused (callers that allow
// NULL use lenEncInt first).
func (c *cursor) lenEncBytes(what string) []byte {
	if c.err != nil {
		return nil
	}
	s, null, n, err := ReadLenEncString(c.b[c.pos:])
	if err == nil && null {
		err = malformed("unexpected NULL marker 0xfb")
	}
	if err != nil {
		c.err = malformed("%s at offset %d: %v", what, c.pos, unwrapMalformed(err))
		return nil
	}
	c.pos += n
	return s
}

func (c *cursor) lenEncString(what string) string { return string(c.lenEncBytes(what)) }

func (c *cursor) nulBytes(what string) []byte {
	if c.err != nil {
		return nil
	}
	s, n, err := ReadNulString(c.b[c.pos:])
	if err != nil {
		c.err = malformed("%s at offset %d: NUL terminator missing", what, c.pos)
		return nil
	}
	c.pos += n
	return s
}

func (c *cursor) nulString(what string) string { return string(c.nulBytes(what)) }

// rest returns the remaining bytes (string<EOF>).
func (c *cursor) rest() []byte {
	if c.err != nil {
		return nil
	}
	s := c.b[c.pos:]
	c.pos = len(c.b)
	return s
}

// unwrapMalformed drops the "mysql: malformed packet: " prefix of a nested
// error so the outer message does not repeat it.
func unwrapMalformed(err error) string {
	s := err.Error()
	p := ErrMalformed.Error() + ": "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

// Appenders for fixed-length integers.
func appendUint16(dst []byte, v uint16) []byte { return binary.LittleEndian.AppendUint16(dst, v) }
func appendUint32(dst []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(dst, v) }
func appendUint64(dst []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(dst, v) }

// done reports the first error, or trailing bytes after a fixed layout.
func (c *cursor) done(what string) error {
	if c.err == nil && c.left() > 0 {
		return malformed("%s has %d unexpected trailing bytes", what, c.left())
	}
	return c.err
}
