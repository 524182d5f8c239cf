package tds

import (
	"encoding/binary"
	"fmt"
)

// rd reads little-endian fields with bounds checks. The first failure
// sticks: later reads return zero values, and err says what was being read.
type rd struct {
	b   []byte
	off int
	err error
	// what names the structure being read, for error messages.
	what string
}

func (r *rd) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, a...)
	}
}

func (r *rd) short(field string, n int) {
	if r.err == nil {
		r.err = &shortError{field: field, what: r.what, need: r.off + n, have: len(r.b)}
	}
}

// shortError is a field that runs past the end of its message.
type shortError struct {
	field, what string
	need, have  int
}

func (e *shortError) Error() string {
	return fmt.Sprintf("%s: %s runs past the end of the data (needs %d bytes, %d present)", e.what, e.field, e.need, e.have)
}

func (r *rd) left() int { return len(r.b) - r.off }

func (r *rd) bytes(field string, n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || r.left() < n {
		r.short(field, n)
		return nil
	}
	v := r.b[r.off : r.off+n]
	r.off += n
	return v
}

func (r *rd) u8(field string) byte    { return byte(r.uint(field, 1)) }
func (r *rd) u16(field string) uint16 { return uint16(r.uint(field, 2)) }
func (r *rd) u32(field string) uint32 { return uint32(r.uint(field, 4)) }
func (r *rd) u64(field string) uint64 { return r.uint(field, 8) }

// uint reads an n-byte little-endian integer (n is 1, 2, 4 or 8); 0 once
// r failed.
func (r *rd) uint(field string, n int) uint64 {
	b := r.bytes(field, n)
	switch len(b) {
	case 1:
		return uint64(b[0])
	case 2:
		return uint64(binary.LittleEndian.Uint16(b))
	case 4:
		return uint64(binary.LittleEndian.Uint32(b))
	case 8:
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// bvarchar reads a B_VARCHAR (byte count of UCS-2 characters).
func (r *rd) bvarchar(field string) string { return r.ucs2(field, int(r.u8(field+" length"))) }

// usvarchar reads a US_VARCHAR (16-bit count of UCS-2 characters).
func (r *rd) usvarchar(field string) string { return r.ucs2(field, int(r.u16(field+" length"))) }

// ucs2 reads n UCS-2 characters; "" once r failed.
func (r *rd) ucs2(field string, n int) string {
	b := r.bytes(field, 2*n)
	if r.err != nil {
		return ""
	}
	return DecodeUCS2(b)
}

func le16(b []byte, v uint16) { binary.LittleEndian.PutUint16(b, v) }
func le32(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }

func appendU16(dst []byte, v uint16) []byte { return binary.LittleEndian.AppendUint16(dst, v) }
func appendU32(dst []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(dst, v) }
func appendU64(dst []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(dst, v) }
