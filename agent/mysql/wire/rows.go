package wire

// Result set rows.
//
// A text row (ProtocolText::ResultsetRow) is one string<lenenc> per column,
// 0xfb for NULL. A binary row (ProtocolBinary::ResultsetRow) is
//
//	int<1>      header 0x00
//	binary<var> NULL bitmap, (column_count+7+2)/8 bytes, bits offset by 2
//	values of the non-NULL columns in the binary protocol

// DecodeTextRow decodes a text row of numColumns columns, appending to dst
// (pass dst[:0] to reuse it).
func DecodeTextRow(payload []byte, numColumns int, dst []Value) ([]Value, error) {
	c := cursor{b: payload}
	for i := 0; i < numColumns; i++ {
		if c.left() > 0 && payload[c.pos] == lenencNull {
			c.pos++
			dst = append(dst, Value{Null: true})
			continue
		}
		b := c.lenEncBytes("column value")
		if c.err != nil {
			return dst, c.err
		}
		dst = append(dst, bytesValue(b))
	}
	return dst, c.done("text row")
}

// EncodeTextRow appends a text row to dst.
func EncodeTextRow(dst []byte, values []Value) ([]byte, error) {
	for _, v := range values {
		if v.Null {
			dst = append(dst, lenencNull)
			continue
		}
		raw, err := v.Raw()
		if err != nil {
			return dst, err
		}
		dst = AppendLenEncBytes(dst, raw)
	}
	return dst, nil
}

// DecodeBinaryRow decodes a binary row of the given columns, appending to
// dst (pass dst[:0] to reuse it).
func DecodeBinaryRow(payload []byte, columns []ColumnDefinition41, dst []Value) ([]Value, error) {
	c := cursor{b: payload}
	if h := c.uint8("binary row header"); c.err == nil && h != 0 {
		return dst, malformed("binary row header 0x%02x, want 0x00", h)
	}
	bitmap := c.take("NULL bitmap", (len(columns)+7+2)/8)
	var scratch [64]byte
	s := scratch[:0]
	for i := range columns {
		if c.err != nil {
			return dst, c.err
		}
		col := &columns[i]
		if bit := i + 2; bitmap[bit/8]&(1<<(bit%8)) != 0 {
			dst = append(dst, Value{Null: true})
			continue
		}
		if !knownBinaryType(col.Type) {
			return dst, malformed("column %d has unknown type 0x%02x", i, uint8(col.Type))
		}
		var v Value
		v, s = readBinaryValue(&c, col.Type, col.Unsigned(), s)
		dst = append(dst, v)
	}
	return dst, c.done("binary row")
}

// EncodeBinaryRow appends a binary row of the given columns to dst.
func EncodeBinaryRow(dst []byte, columns []ColumnDefinition41, values []Value) ([]byte, error) {
	if len(values) != len(columns) {
		return dst, malformed("binary row of %d values for %d columns", len(values), len(columns))
	}
	dst = append(dst, 0)
	start := len(dst)
	dst = append(dst, make([]byte, (len(columns)+7+2)/8)...)
	for i, v := range values {
		if v.Null {
			bit := i + 2
			dst[start+bit/8] |= 1 << (bit % 8)
		}
	}
	for i, v := range values {
		var err error
		if dst, err = appendBinaryValue(dst, columns[i].Type, columns[i].Unsigned(), v); err != nil {
			return dst, err
		}
	}
	return dst, nil
}
