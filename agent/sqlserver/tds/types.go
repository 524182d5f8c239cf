package tds

import (
	"fmt"
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
