package tds

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"time"
	"unicode/utf8"
)

// Value is a decoded parameter or return value, rendered as text.
type Value struct {
	Text      string
	Null      bool
	Truncated bool
}

// readValue reads one value of t (RPC parameter encoding) and renders it,
// cutting the rendering at limit bytes (0: no limit).
func readValue(r *rd, t *TypeInfo, limit int) Value {
	start := r.off
	if t.PLP() {
		var data []byte
		total := r.u64("PLP length")
		if r.err != nil {
			return Value{}
		}
		if total == plpNull {
			return Value{Text: "NULL", Null: true}
		}
		var sum uint64
		for {
			n := r.u32("PLP chunk length")
			if r.err != nil {
				return Value{}
			}
			if n == 0 {
				break
			}
			chunk := r.bytes("PLP chunk", int(n))
			if r.err != nil {
				return Value{}
			}
			sum += uint64(n)
			if limit <= 0 || len(data) < 2*limit+8 {
				data = append(data, chunk...)
			}
		}
		if total != plpUnknown && sum != total {
			r.fail("%s PLP value announced %d bytes but its chunks hold %d", t.String(), total, sum)
			return Value{}
		}
		if t.Type == TypeNVarChar && sum%2 != 0 {
			r.fail("%s value of odd length %d", t.String(), sum)
			return Value{}
		}
		return render(t, data, limit, int(sum) > len(data))
	}
	if isFixed(t.Type) {
		b := r.bytes("value", t.Size)
		if r.err != nil {
			return Value{}
		}
		if t.Type == TypeNull {
			return Value{Text: "NULL", Null: true}
		}
		return render(t, b, limit, false)
	}
	skipValue(r, t, false)
	if r.err != nil {
		return Value{}
	}
	raw := r.b[start:r.off]
	var data []byte
	switch t.Type {
	case TypeBigVarBinary, TypeBigBinary, TypeBigVarChar, TypeBigChar, TypeNVarChar, TypeNChar, TypeUDT:
		if binary.LittleEndian.Uint16(raw) == maxLen {
			return Value{Text: "NULL", Null: true}
		}
		data = raw[2:]
	case TypeText, TypeNText, TypeImage:
		if binary.LittleEndian.Uint32(raw) == 0xFFFFFFFF {
			return Value{Text: "NULL", Null: true}
		}
		data = raw[4:]
	case TypeVariant:
		if len(raw) == 4 {
			return Value{Text: "NULL", Null: true}
		}
		return renderVariant(raw[4:], limit)
	default:
		if raw[0] == 0 {
			return Value{Text: "NULL", Null: true}
		}
		data = raw[1:]
	}
	return render(t, data, limit, false)
}

func cut(s string, limit int, truncated bool) Value {
	if limit > 0 && len(s) > limit {
		s = s[:limit]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		truncated = true
	}
	return Value{Text: s, Truncated: truncated}
}

// render turns a non-NULL value's bytes into text: numbers and dates as SQL
// Server prints them, Unicode text as is, single-byte text as is when it
// is UTF-8 and as base64: otherwise (its code page is not decoded),
// binary as 0x-prefixed hex.
func render(t *TypeInfo, b []byte, limit int, truncated bool) Value {
	switch t.Type {
	case TypeInt1:
		return Value{Text: strconv.Itoa(int(b[0]))}
	case TypeBit, TypeBitN:
		if b[0] != 0 {
			return Value{Text: "1"}
		}
		return Value{Text: "0"}
	case TypeInt2:
		return Value{Text: strconv.Itoa(int(int16(binary.LittleEndian.Uint16(b))))}
	case TypeInt4:
		return Value{Text: strconv.Itoa(int(int32(binary.LittleEndian.Uint32(b))))}
	case TypeInt8:
		return Value{Text: strconv.FormatInt(int64(binary.LittleEndian.Uint64(b)), 10)}
	case TypeIntN:
		switch len(b) {
		case 1:
			return Value{Text: strconv.Itoa(int(b[0]))}
		case 2:
			return Value{Text: strconv.Itoa(int(int16(binary.LittleEndian.Uint16(b))))}
		case 4:
			return Value{Text: strconv.Itoa(int(int32(binary.LittleEndian.Uint32(b))))}
		}
		return Value{Text: strconv.FormatInt(int64(binary.LittleEndian.Uint64(b)), 10)}
	case TypeFlt4, TypeFlt8, TypeFltN:
		if len(b) == 4 {
			return Value{Text: strconv.FormatFloat(float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), 'g', -1, 32)}
		}
		return Value{Text: strconv.FormatFloat(math.Float64frombits(binary.LittleEndian.Uint64(b)), 'g', -1, 64)}
	case TypeMoney, TypeMoney4, TypeMoneyN:
		var v int64
		if len(b) == 4 {
			v = int64(int32(binary.LittleEndian.Uint32(b)))
		} else {
			v = int64(binary.LittleEndian.Uint32(b))<<32 | int64(binary.LittleEndian.Uint32(b[4:]))
		}
		return Value{Text: scaled(big.NewInt(v), 4)}
	case TypeDecimal, TypeNumeric, TypeDecimalN, TypeNumericN:
		mag := make([]byte, len(b)-1)
		for i := range mag {
			mag[i] = b[len(b)-1-i]
		}
		v := new(big.Int).SetBytes(mag)
		if b[0] == 0 {
			v.Neg(v)
		}
		return Value{Text: scaled(v, int(t.Scale))}
	case TypeDateTime4, TypeDateTime, TypeDateTimeN:
		if len(b) == 4 {
			days := binary.LittleEndian.Uint16(b)
			mins := binary.LittleEndian.Uint16(b[2:])
			d := time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, int(days)).Add(time.Duration(mins) * time.Minute)
			return Value{Text: d.Format("2006-01-02 15:04:05")}
		}
		days := int32(binary.LittleEndian.Uint32(b))
		ticks := binary.LittleEndian.Uint32(b[4:])
		// Ticks are 1/300 s; SQL Server shows them rounded to .000,
		// .003 or .007.
		ms := (int64(ticks)*10 + 1) / 3
		d := time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, int(days)).Add(time.Duration(ms) * time.Millisecond)
		return Value{Text: d.Format("2006-01-02 15:04:05.000")}
	case TypeDateN:
		return Value{Text: date3(b).Format("2006-01-02")}
	case TypeTimeN:
		return Value{Text: clock(b, t.Scale)}
	case TypeDateTime2N:
		tl := timeLen(t.Scale)
		return Value{Text: date3(b[tl:]).Format("2006-01-02") + " " + clock(b[:tl], t.Scale)}
	case TypeDateTimeOffsetN:
		tl := timeLen(t.Scale)
		off := int(int16(binary.LittleEndian.Uint16(b[tl+3:])))
		// The value is stored in UTC; it is shown at its own offset.
		utc := date3(b[tl : tl+3]).Add(clockDuration(b[:tl], t.Scale))
		local := utc.Add(time.Duration(off) * time.Minute)
		sign := '+'
		if off < 0 {
			sign, off = '-', -off
		}
		frac := clockFrac(local, t.Scale)
		return Value{Text: fmt.Sprintf("%s%s %c%02d:%02d", local.Format("2006-01-02 15:04:05"), frac, sign, off/60, off%60)}
	case TypeGUID:
		return Value{Text: guid(b)}
	case TypeNVarChar, TypeNChar, TypeNText, TypeXML:
		return cut(DecodeUCS2(b), limit, truncated)
	case TypeBigVarChar, TypeBigChar, TypeVarChar, TypeChar, TypeText:
		if utf8.Valid(b) {
			return cut(string(b), limit, truncated)
		}
		return cut("base64:"+base64.StdEncoding.EncodeToString(b), limit, truncated)
	}
	return cut("0x"+hex.EncodeToString(b), limit, truncated)
}

// renderVariant renders a sql_variant: base type, property bytes, value.
func renderVariant(b []byte, limit int) Value {
	r := &rd{b: b, what: "sql_variant"}
	base := r.u8("base type")
	props := int(r.u8("property length"))
	p := r.bytes("properties", props)
	if r.err != nil {
		return Value{Text: "sql_variant"}
	}
	t := TypeInfo{Type: base}
	switch base {
	case TypeIntN, TypeFltN, TypeMoneyN, TypeDateTimeN, TypeBitN, TypeGUID, TypeDateN:
	case TypeTimeN, TypeDateTime2N, TypeDateTimeOffsetN:
		if props == 1 {
			t.Scale = p[0]
		}
	case TypeDecimalN, TypeNumericN:
		if props == 2 {
			t.Precision, t.Scale = p[0], p[1]
		}
	}
	data := b[r.off:]
	if isFixed(base) {
		if len(data) != int(fixedSizes[base]) {
			return Value{Text: "sql_variant"}
		}
	}
	switch base {
	case TypeDecimalN, TypeNumericN, TypeDecimal, TypeNumeric:
		if len(data) < 2 {
			return Value{Text: "sql_variant"}
		}
	case TypeIntN, TypeFltN, TypeMoneyN, TypeDateTimeN:
		if len(data) != 1 && len(data) != 2 && len(data) != 4 && len(data) != 8 {
			return Value{Text: "sql_variant"}
		}
	case TypeBitN:
		if len(data) != 1 {
			return Value{Text: "sql_variant"}
		}
	case TypeGUID:
		if len(data) != 16 {
			return Value{Text: "sql_variant"}
		}
	case TypeDateN:
		if len(data) != 3 {
			return Value{Text: "sql_variant"}
		}
	case TypeTimeN, TypeDateTime2N, TypeDateTimeOffsetN:
		want := timeLen(t.Scale)
		if base == TypeDateTime2N {
			want += 3
		} else if base == TypeDateTimeOffsetN {
			want += 5
		}
		if len(data) != want {
			return Value{Text: "sql_variant"}
		}
	}
	return render(&t, data, limit, false)
}

func scaled(v *big.Int, scale int) string {
	s := v.String()
	if scale == 0 {
		return s
	}
	neg := false
	if s[0] == '-' {
		neg, s = true, s[1:]
	}
	for len(s) <= scale {
		s = "0" + s
	}
	s = s[:len(s)-scale] + "." + s[len(s)-scale:]
	if neg {
		s = "-" + s
	}
	return s
}

func guid(b []byte) string {
	var o [16]byte
	o[0], o[1], o[2], o[3] = b[3], b[2], b[1], b[0]
	o[4], o[5] = b[5], b[4]
	o[6], o[7] = b[7], b[6]
	copy(o[8:], b[8:])
	h := hex.EncodeToString(o[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
