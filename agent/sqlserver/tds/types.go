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

// Data types (MS-TDS 2.2.5.4).
const (
	TypeNull            byte = 0x1F
	TypeInt1            byte = 0x30
	TypeBit             byte = 0x32
	TypeInt2            byte = 0x34
	TypeInt4            byte = 0x38
	TypeDateTime4       byte = 0x3A
	TypeFlt4            byte = 0x3B
	TypeMoney           byte = 0x3C
	TypeDateTime        byte = 0x3D
	TypeFlt8            byte = 0x3E
	TypeMoney4          byte = 0x7A
	TypeInt8            byte = 0x7F
	TypeGUID            byte = 0x24
	TypeIntN            byte = 0x26
	TypeDecimal         byte = 0x37
	TypeNumeric         byte = 0x3F
	TypeBitN            byte = 0x68
	TypeDecimalN        byte = 0x6A
	TypeNumericN        byte = 0x6C
	TypeFltN            byte = 0x6D
	TypeMoneyN          byte = 0x6E
	TypeDateTimeN       byte = 0x6F
	TypeDateN           byte = 0x28
	TypeTimeN           byte = 0x29
	TypeDateTime2N      byte = 0x2A
	TypeDateTimeOffsetN byte = 0x2B
	TypeChar            byte = 0x2F
	TypeVarChar         byte = 0x27
	TypeBinary          byte = 0x2D
	TypeVarBinary       byte = 0x25
	TypeBigVarBinary    byte = 0xA5
	TypeBigVarChar      byte = 0xA7
	TypeBigBinary       byte = 0xAD
	TypeBigChar         byte = 0xAF
	TypeNVarChar        byte = 0xE7
	TypeNChar           byte = 0xEF
	TypeXML             byte = 0xF1
	TypeUDT             byte = 0xF0
	TypeText            byte = 0x23
	TypeImage           byte = 0x22
	TypeNText           byte = 0x63
	TypeVariant         byte = 0x62
	TypeTVP             byte = 0xF3
)

// Lengths of the PLP encoding.
const (
	plpNull    uint64 = 0xFFFFFFFFFFFFFFFF
	plpUnknown uint64 = 0xFFFFFFFFFFFFFFFE
	maxLen     uint16 = 0xFFFF
)

// TypeInfo is a TYPE_INFO: the type and what its values' encoding needs.
type TypeInfo struct {
	Type byte
	// Size is the maximum length (variable types) or the fixed size.
	Size      int
	Precision byte
	Scale     byte
	Collation [5]byte
	// TypeName is set for UDT (schema.type) and XML with a schema.
	TypeName string
}

// PLP reports whether values of t use the partially length-prefixed
// encoding (max types, XML, large UDTs).
func (t *TypeInfo) PLP() bool {
	switch t.Type {
	case TypeXML:
		return true
	case TypeBigVarChar, TypeBigVarBinary, TypeNVarChar, TypeUDT:
		return t.Size == int(maxLen)
	}
	return false
}

var fixedSizes = [256]int8{
	TypeNull: 0, TypeInt1: 1, TypeBit: 1, TypeInt2: 2, TypeInt4: 4, TypeDateTime4: 4,
	TypeFlt4: 4, TypeMoney: 8, TypeDateTime: 8, TypeFlt8: 8, TypeMoney4: 4, TypeInt8: 8,
}

func isFixed(t byte) bool {
	switch t {
	case TypeNull, TypeInt1, TypeBit, TypeInt2, TypeInt4, TypeDateTime4, TypeFlt4, TypeMoney, TypeDateTime, TypeFlt8, TypeMoney4, TypeInt8:
		return true
	}
	return false
}

// TypeName names a type as SQL Server does, with its size.
func (t *TypeInfo) String() string {
	switch t.Type {
	case TypeNull:
		return "null"
	case TypeInt1:
		return "tinyint"
	case TypeBit, TypeBitN:
		return "bit"
	case TypeInt2:
		return "smallint"
	case TypeInt4:
		return "int"
	case TypeInt8:
		return "bigint"
	case TypeIntN:
		switch t.Size {
		case 1:
			return "tinyint"
		case 2:
			return "smallint"
		case 8:
			return "bigint"
		}
		return "int"
	case TypeDateTime4:
		return "smalldatetime"
	case TypeDateTime:
		return "datetime"
	case TypeDateTimeN:
		if t.Size == 4 {
			return "smalldatetime"
		}
		return "datetime"
	case TypeFlt4:
		return "real"
	case TypeFlt8:
		return "float"
	case TypeFltN:
		if t.Size == 4 {
			return "real"
		}
		return "float"
	case TypeMoney:
		return "money"
	case TypeMoney4:
		return "smallmoney"
	case TypeMoneyN:
		if t.Size == 4 {
			return "smallmoney"
		}
		return "money"
	case TypeGUID:
		return "uniqueidentifier"
	case TypeDecimal, TypeDecimalN:
		return fmt.Sprintf("decimal(%d,%d)", t.Precision, t.Scale)
	case TypeNumeric, TypeNumericN:
		return fmt.Sprintf("numeric(%d,%d)", t.Precision, t.Scale)
	case TypeDateN:
		return "date"
	case TypeTimeN:
		return fmt.Sprintf("time(%d)", t.Scale)
	case TypeDateTime2N:
		return fmt.Sprintf("datetime2(%d)", t.Scale)
	case TypeDateTimeOffsetN:
		return fmt.Sprintf("datetimeoffset(%d)", t.Scale)
	case TypeChar, TypeBigChar:
		return fmt.Sprintf("char(%d)", t.Size)
	case TypeVarChar, TypeBigVarChar:
		return sized("varchar", t.Size, 1)
	case TypeBinary, TypeBigBinary:
		return fmt.Sprintf("binary(%d)", t.Size)
	case TypeVarBinary, TypeBigVarBinary:
		return sized("varbinary", t.Size, 1)
	case TypeNChar:
		return fmt.Sprintf("nchar(%d)", t.Size/2)
	case TypeNVarChar:
		return sized("nvarchar", t.Size, 2)
	case TypeXML:
		return "xml"
	case TypeUDT:
		if t.TypeName != "" {
			return t.TypeName
		}
		return "udt"
	case TypeText:
		return "text"
	case TypeNText:
		return "ntext"
	case TypeImage:
		return "image"
	case TypeVariant:
		return "sql_variant"
	}
	return fmt.Sprintf("type 0x%02X", t.Type)
}

func sized(name string, size, unit int) string {
	if size == int(maxLen) {
		return name + "(max)"
	}
	return fmt.Sprintf("%s(%d)", name, size/unit)
}

func timeLen(scale byte) int {
	switch {
	case scale <= 2:
		return 3
	case scale <= 4:
		return 4
	}
	return 5
}

// readTypeInfo reads a TYPE_INFO. colmeta says it belongs to COLMETADATA
// (where TEXT, NTEXT and IMAGE carry a table name and UDTs their assembly
// name) rather than to an RPC parameter.
func readTypeInfo(r *rd, colmeta bool) TypeInfo {
	t := TypeInfo{Type: r.u8("data type")}
	if r.err != nil {
		return t
	}
	switch t.Type {
	case TypeNull, TypeInt1, TypeBit, TypeInt2, TypeInt4, TypeDateTime4, TypeFlt4, TypeMoney, TypeDateTime, TypeFlt8, TypeMoney4, TypeInt8:
		t.Size = int(fixedSizes[t.Type])
	case TypeGUID, TypeIntN, TypeBitN, TypeFltN, TypeMoneyN, TypeDateTimeN, TypeChar, TypeVarChar, TypeBinary, TypeVarBinary:
		t.Size = int(r.u8("type length"))
		if r.err != nil {
			return t
		}
		ok := true
		switch t.Type {
		case TypeGUID:
			ok = t.Size == 16
		case TypeIntN:
			ok = t.Size == 1 || t.Size == 2 || t.Size == 4 || t.Size == 8
		case TypeBitN:
			ok = t.Size == 1
		case TypeFltN, TypeMoneyN, TypeDateTimeN:
			ok = t.Size == 4 || t.Size == 8
		}
		if !ok {
			r.fail("%s with length %d", t.String(), t.Size)
		}
	case TypeDecimal, TypeNumeric, TypeDecimalN, TypeNumericN:
		t.Size = int(r.u8("type length"))
		t.Precision = r.u8("precision")
		t.Scale = r.u8("scale")
		if r.err != nil {
			return t
		}
		if t.Size != 5 && t.Size != 9 && t.Size != 13 && t.Size != 17 {
			r.fail("decimal with length %d (want 5, 9, 13 or 17)", t.Size)
		} else if t.Precision < 1 || t.Precision > 38 || t.Scale > t.Precision {
			r.fail("decimal with precision %d and scale %d", t.Precision, t.Scale)
		}
	case TypeDateN:
		t.Size = 3
	case TypeTimeN, TypeDateTime2N, TypeDateTimeOffsetN:
		t.Scale = r.u8("scale")
		if t.Scale > 7 {
			r.fail("%s with scale %d (at most 7)", t.String(), t.Scale)
		}
		t.Size = timeLen(t.Scale)
		switch t.Type {
		case TypeDateTime2N:
			t.Size += 3
		case TypeDateTimeOffsetN:
			t.Size += 5
		}
	case TypeBigVarBinary, TypeBigBinary, TypeBigVarChar, TypeBigChar, TypeNVarChar, TypeNChar, TypeUDT:
		t.Size = int(r.u16("type length"))
		if r.err != nil {
			return t
		}
		if t.Size == int(maxLen) && (t.Type == TypeBigBinary || t.Type == TypeBigChar || t.Type == TypeNChar) {
			r.fail("%s cannot be (max)", t.String())
		}
		if t.Size > 8000 && t.Size != int(maxLen) {
			r.fail("%s with length %d (at most 8000)", t.String(), t.Size)
		}
		switch t.Type {
		case TypeBigVarChar, TypeBigChar, TypeNVarChar, TypeNChar:
			copy(t.Collation[:], r.bytes("collation", 5))
		case TypeUDT:
			db := r.bvarchar("UDT database")
			schema := r.bvarchar("UDT schema")
			name := r.bvarchar("UDT type name")
			_ = db
			t.TypeName = schema + "." + name
			if colmeta {
				r.usvarchar("UDT assembly name")
			}
		}
	case TypeText, TypeNText, TypeImage:
		t.Size = int(r.u32("type length"))
		if t.Type != TypeImage {
			copy(t.Collation[:], r.bytes("collation", 5))
		}
		if colmeta {
			parts := int(r.u8("table name parts"))
			for i := 0; i < parts && r.err == nil; i++ {
				r.usvarchar("table name")
			}
		}
	case TypeXML:
		schema := r.u8("XML schema flag")
		if schema > 1 {
			r.fail("XML schema flag %d", schema)
		}
		if schema == 1 {
			r.bvarchar("XML schema database")
			owner := r.bvarchar("XML schema owner")
			coll := r.usvarchar("XML schema collection")
			t.TypeName = owner + "." + coll
		}
		t.Size = int(maxLen)
	case TypeVariant:
		t.Size = int(r.u32("type length"))
		if t.Size > 8009 {
			r.fail("sql_variant with length %d (at most 8009)", t.Size)
		}
	case TypeTVP:
		r.fail("table-valued parameters are not supported")
	default:
		r.fail("unknown data type 0x%02X", t.Type)
	}
	return t
}

// skipValue steps over one value of type t; row says it is in a ROW (where
// TEXT, NTEXT and IMAGE carry a text pointer) rather than an RPC
// parameter. Data that ends inside the value leaves a *shortError in r.
func skipValue(r *rd, t *TypeInfo, row bool) {
	if isFixed(t.Type) {
		r.bytes("value", t.Size)
		return
	}
	if t.PLP() {
		skipPLP(r, t)
		return
	}
	switch t.Type {
	case TypeGUID, TypeIntN, TypeBitN, TypeFltN, TypeMoneyN, TypeDateTimeN, TypeChar, TypeVarChar, TypeBinary, TypeVarBinary,
		TypeDecimal, TypeNumeric, TypeDecimalN, TypeNumericN, TypeDateN, TypeTimeN, TypeDateTime2N, TypeDateTimeOffsetN:
		n := int(r.u8("value length"))
		if r.err == nil && n != 0 && !validLen(t, n) {
			r.fail("%s value of %d bytes", t.String(), n)
			return
		}
		r.bytes("value", n)
	case TypeBigVarBinary, TypeBigBinary, TypeBigVarChar, TypeBigChar, TypeNVarChar, TypeNChar, TypeUDT:
		n := r.u16("value length")
		if r.err != nil || n == maxLen {
			return
		}
		if int(n) > t.Size {
			r.fail("%s value of %d bytes is longer than its type", t.String(), n)
			return
		}
		if (t.Type == TypeNVarChar || t.Type == TypeNChar) && n%2 != 0 {
			r.fail("%s value of odd length %d", t.String(), n)
			return
		}
		r.bytes("value", int(n))
	case TypeText, TypeNText, TypeImage:
		if row {
			ptr := int(r.u8("text pointer length"))
			if ptr == 0 || r.err != nil {
				return
			}
			r.bytes("text pointer", ptr)
			r.bytes("text timestamp", 8)
		}
		n := r.u32("value length")
		if r.err != nil || (!row && n == 0xFFFFFFFF) {
			return
		}
		if t.Type == TypeNText && n%2 != 0 {
			r.fail("ntext value of odd length %d", n)
			return
		}
		r.bytes("value", int(n))
	case TypeVariant:
		n := int(r.u32("sql_variant length"))
		if r.err != nil || n == 0 {
			return
		}
		if n > t.Size || n < 2 {
			r.fail("sql_variant value of %d bytes", n)
			return
		}
		r.bytes("sql_variant value", n)
	default:
		r.fail("cannot read a value of %s", t.String())
	}
}

// validLen checks a non-NULL value's length for the 1-byte-length types.
func validLen(t *TypeInfo, n int) bool {
	switch t.Type {
	case TypeGUID, TypeDateN, TypeTimeN, TypeDateTime2N, TypeDateTimeOffsetN:
		return n == t.Size
	case TypeIntN:
		return (n == 1 || n == 2 || n == 4 || n == 8) && n <= t.Size
	case TypeBitN:
		return n == 1
	case TypeFltN, TypeMoneyN, TypeDateTimeN:
		return (n == 4 || n == 8) && n <= t.Size
	case TypeDecimal, TypeNumeric, TypeDecimalN, TypeNumericN:
		return n >= 5 && n <= t.Size && (n-1)%4 == 0
	}
	return n <= t.Size
}

func skipPLP(r *rd, t *TypeInfo) {
	total := r.u64("PLP length")
	if r.err != nil || total == plpNull {
		return
	}
	var sum uint64
	for {
		n := r.u32("PLP chunk length")
		if r.err != nil {
			return
		}
		if n == 0 {
			break
		}
		r.bytes("PLP chunk", int(n))
		if r.err != nil {
			return
		}
		sum += uint64(n)
	}
	if total != plpUnknown && sum != total {
		r.fail("%s PLP value announced %d bytes but its chunks hold %d", t.String(), total, sum)
	}
}

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

func date3(b []byte) time.Time {
	days := int(b[0]) | int(b[1])<<8 | int(b[2])<<16
	return time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, days)
}

func clockDuration(b []byte, scale byte) time.Duration {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	for i := scale; i < 7; i++ {
		v *= 10
	}
	return time.Duration(v) * 100
}

func clock(b []byte, scale byte) string {
	t := time.Time{}.Add(clockDuration(b, scale))
	return t.Format("15:04:05") + clockFrac(t, scale)
}

func clockFrac(t time.Time, scale byte) string {
	if scale == 0 {
		return ""
	}
	f := fmt.Sprintf("%07d", t.Nanosecond()/100)
	return "." + f[:scale]
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
