package wire

// ColumnDefinition41 describes one column of a result set, or one parameter
// of a prepared statement (Protocol::ColumnDefinition41):
//
//	string<lenenc> catalog ("def")
//	string<lenenc> schema
//	string<lenenc> table (alias)
//	string<lenenc> org_table
//	string<lenenc> name (alias)
//	string<lenenc> org_name
//	string<lenenc> extended type info  if MARIADB_CLIENT_EXTENDED_METADATA
//	int<lenenc>    length of fixed fields (0x0c)
//	int<2>         character set
//	int<4>         column length
//	int<1>         type
//	int<2>         flags
//	int<1>         decimals
//	int<2>         reserved
//	string<lenenc> default values      (COM_FIELD_LIST responses only; may be NULL)
type ColumnDefinition41 struct {
	Catalog      string
	Schema       string
	Table        string
	OrgTable     string
	Name         string
	OrgName      string
	Extended     []byte // MariaDB extended metadata, raw
	CharacterSet uint16
	ColumnLength uint32
	Type         FieldType
	Flags        uint16
	Decimals     uint8
	HasDefault   bool  // a COM_FIELD_LIST default was present
	Default      Value // the default (Null if sent as NULL)
}

// Unsigned reports whether the column has UNSIGNED_FLAG.
func (d *ColumnDefinition41) Unsigned() bool { return d.Flags&FlagUnsigned != 0 }

// Decode parses a column definition sent to a client with capabilities caps.
func (d *ColumnDefinition41) Decode(src []byte, caps Capabilities) error {
	*d = ColumnDefinition41{}
	c := cursor{b: src}
	d.Catalog = c.lenEncString("catalog")
	d.Schema = c.lenEncString("schema")
	d.Table = c.lenEncString("table")
	d.OrgTable = c.lenEncString("org_table")
	d.Name = c.lenEncString("name")
	d.OrgName = c.lenEncString("org_name")
	if caps.Has(MariaDBClientExtendedMetadata) {
		d.Extended = cloneBytes(c.lenEncBytes("extended type info"))
	}
	if n, _ := c.lenEncInt("length of fixed fields"); c.err == nil && n != 0x0c {
		return malformed("column definition fixed fields of length %d, want 12", n)
	}
	d.CharacterSet = c.uint16("character set")
	d.ColumnLength = c.uint32("column length")
	d.Type = FieldType(c.uint8("type"))
	d.Flags = c.uint16("flags")
	d.Decimals = c.uint8("decimals")
	c.take("reserved", 2)
	if c.err == nil && c.left() > 0 {
		d.HasDefault = true
		if src[c.pos] == lenencNull {
			c.pos++
			d.Default = Value{Null: true}
		} else {
			d.Default = bytesValue(c.lenEncBytes("default value"))
		}
	}
	return c.done("column definition")
}

// Encode appends the definition's payload to dst.
func (d *ColumnDefinition41) Encode(dst []byte, caps Capabilities) []byte {
	dst = AppendLenEncString(dst, d.Catalog)
	dst = AppendLenEncString(dst, d.Schema)
	dst = AppendLenEncString(dst, d.Table)
	dst = AppendLenEncString(dst, d.OrgTable)
	dst = AppendLenEncString(dst, d.Name)
	dst = AppendLenEncString(dst, d.OrgName)
	if caps.Has(MariaDBClientExtendedMetadata) {
		dst = AppendLenEncBytes(dst, d.Extended)
	}
	dst = append(dst, 0x0c)
	dst = appendUint16(dst, d.CharacterSet)
	dst = appendUint32(dst, d.ColumnLength)
	dst = append(dst, byte(d.Type))
	dst = appendUint16(dst, d.Flags)
	dst = append(dst, d.Decimals, 0, 0)
	if d.HasDefault {
		if d.Default.Null {
			return append(dst, lenencNull)
		}
		raw, err := d.Default.Raw()
		if err != nil {
			raw = []byte(d.Default.Text)
		}
		dst = AppendLenEncBytes(dst, raw)
	}
	return dst
}
