package tds

import (
	"encoding/binary"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// DecodeUCS2 converts little-endian UTF-16 (what TDS calls UCS-2) to a
// string. Unpaired surrogates become U+FFFD, as SQL Server's own text
// conversions do. b must have even length.
func DecodeUCS2(b []byte) string {
	// ASCII text (most statements) converts byte by byte.
	ascii := true
	for i := 0; i+1 < len(b); i += 2 {
		if b[i+1] != 0 || b[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		if len(b) < 2 {
			return ""
		}
		out := make([]byte, len(b)/2)
		for i := range out {
			out[i] = b[2*i]
		}
		// out is never written again: the string may share it (one
		// allocation per statement instead of two).
		return unsafe.String(&out[0], len(out))
	}
	buf := make([]byte, 0, len(b)/2*3)
	for i := 0; i+1 < len(b); i += 2 {
		r := rune(binary.LittleEndian.Uint16(b[i:]))
		if utf16.IsSurrogate(r) {
			if r < 0xDC00 && i+3 < len(b) {
				r2 := rune(binary.LittleEndian.Uint16(b[i+2:]))
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					buf = utf8.AppendRune(buf, dec)
					i += 2
					continue
				}
			}
			r = utf8.RuneError
		}
		buf = utf8.AppendRune(buf, r)
	}
	if len(buf) == 0 {
		return ""
	}
	return unsafe.String(&buf[0], len(buf))
}

// AppendUCS2 appends s as little-endian UTF-16.
func AppendUCS2(dst []byte, s string) []byte {
	for _, r := range s {
		if r >= 0x10000 {
			r1, r2 := utf16.EncodeRune(r)
			dst = append(dst, byte(r1), byte(r1>>8), byte(r2), byte(r2>>8))
			continue
		}
		dst = append(dst, byte(r), byte(r>>8))
	}
	return dst
}

// UCS2Len is the number of UTF-16 code units of s.
func UCS2Len(s string) int {
	n := 0
	for _, r := range s {
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
	}
	return n
}

// appendBVarchar appends a B_VARCHAR: a byte count of characters, then
// UCS-2.
func appendBVarchar(dst []byte, s string) []byte {
	dst = append(dst, byte(UCS2Len(s)))
	return AppendUCS2(dst, s)
}

// appendUSVarchar appends a US_VARCHAR: a 16-bit count of characters, then
// UCS-2.
func appendUSVarchar(dst []byte, s string) []byte {
	n := UCS2Len(s)
	dst = append(dst, byte(n), byte(n>>8))
	return AppendUCS2(dst, s)
}
