package wire

import "fmt"

// FieldType is a column or parameter type (enum_field_types, MYSQL_TYPE_*).
type FieldType uint8

const (
	TypeDecimal    FieldType = 0x00
	TypeTiny       FieldType = 0x01
	TypeShort      FieldType = 0x02
	TypeLong       FieldType = 0x03
	TypeFloat      FieldType = 0x04
	TypeDouble     FieldType = 0x05
	TypeNull       FieldType = 0x06
	TypeTimestamp  FieldType = 0x07
	TypeLongLong   FieldType = 0x08
	TypeInt24      FieldType = 0x09
	TypeDate       FieldType = 0x0a
	TypeTime       FieldType = 0x0b
	TypeDateTime   FieldType = 0x0c
	TypeYear       FieldType = 0x0d
	TypeNewDate    FieldType = 0x0e
	TypeVarchar    FieldType = 0x0f
	TypeBit        FieldType = 0x10
	TypeTimestamp2 FieldType = 0x11
	TypeDateTime2  FieldType = 0x12
	TypeTime2      FieldType = 0x13
	TypeVector     FieldType = 0xf2
	TypeJSON       FieldType = 0xf5
	TypeNewDecimal FieldType = 0xf6
	TypeEnum       FieldType = 0xf7
	TypeSet        FieldType = 0xf8
	TypeTinyBlob   FieldType = 0xf9
	TypeMediumBlob FieldType = 0xfa
	TypeLongBlob   FieldType = 0xfb
	TypeBlob       FieldType = 0xfc
	TypeVarString  FieldType = 0xfd
	TypeString     FieldType = 0xfe
	TypeGeometry   FieldType = 0xff
)

var fieldTypeNames = map[FieldType]string{
	TypeDecimal: "DECIMAL", TypeTiny: "TINY", TypeShort: "SHORT", TypeLong: "LONG",
	TypeFloat: "FLOAT", TypeDouble: "DOUBLE", TypeNull: "NULL", TypeTimestamp: "TIMESTAMP",
	TypeLongLong: "LONGLONG", TypeInt24: "INT24", TypeDate: "DATE", TypeTime: "TIME",
	TypeDateTime: "DATETIME", TypeYear: "YEAR", TypeNewDate: "NEWDATE", TypeVarchar: "VARCHAR",
	TypeBit: "BIT", TypeTimestamp2: "TIMESTAMP2", TypeDateTime2: "DATETIME2", TypeTime2: "TIME2",
	TypeVector: "VECTOR", TypeJSON: "JSON", TypeNewDecimal: "NEWDECIMAL", TypeEnum: "ENUM",
	TypeSet: "SET", TypeTinyBlob: "TINY_BLOB", TypeMediumBlob: "MEDIUM_BLOB", TypeLongBlob: "LONG_BLOB",
	TypeBlob: "BLOB", TypeVarString: "VAR_STRING", TypeString: "STRING", TypeGeometry: "GEOMETRY",
}

// String returns the type's name without the MYSQL_TYPE_ prefix.
func (t FieldType) String() string {
	if n, ok := fieldTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("TYPE_0x%02x", uint8(t))
}

// Column definition flags (the flags field of ColumnDefinition41).
const (
	FlagNotNull       uint16 = 0x0001
	FlagPriKey        uint16 = 0x0002
	FlagUniqueKey     uint16 = 0x0004
	FlagMultipleKey   uint16 = 0x0008
	FlagBlob          uint16 = 0x0010
	FlagUnsigned      uint16 = 0x0020
	FlagZerofill      uint16 = 0x0040
	FlagBinary        uint16 = 0x0080
	FlagEnum          uint16 = 0x0100
	FlagAutoIncrement uint16 = 0x0200
	FlagTimestamp     uint16 = 0x0400
	FlagSet           uint16 = 0x0800
)

// paramUnsigned is the flag in the high byte of a parameter's int<2> type
// in COM_STMT_EXECUTE.
const paramUnsigned = 0x80
