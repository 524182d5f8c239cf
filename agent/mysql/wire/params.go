package wire

// ParamType is a parameter's type as sent in COM_STMT_EXECUTE or with
// query attributes: int<2>, the field type in the low byte and 0x80 in the
// high byte for unsigned.
type ParamType struct {
	Type     FieldType
	Unsigned bool
}

// Param is one decoded parameter of COM_STMT_EXECUTE or one query
// attribute of COM_QUERY.
type Param struct {
	ParamType
	Name      string // query attributes (CLIENT_QUERY_ATTRIBUTES) only
	LongData  bool   // the value was sent earlier by COM_STMT_SEND_LONG_DATA
	Truncated bool   // long data beyond the tracker's limit is not in Value
	Value
}

// ParamTypeAccepted reports whether a parameter of type t is decoded.
//
// Only the types that clients send and that MySQL and MariaDB read the same
// way are accepted. The others are refused because the server would not
// read what the audit records: MariaDB 10.11 takes an INT24, YEAR, BIT or
// GEOMETRY parameter as NULL without consuming its bytes (so the next
// parameter is read from them), rejects JSON and the internal *2 types, and
// reads NEWDATE as a date where MySQL reads it as a string.
func ParamTypeAccepted(t FieldType) bool {
	switch t {
	case TypeDecimal, TypeNewDecimal, TypeTiny, TypeShort, TypeLong, TypeLongLong,
		TypeFloat, TypeDouble, TypeNull, TypeDate, TypeTime, TypeDateTime, TypeTimestamp,
		TypeVarchar, TypeVarString, TypeString, TypeEnum, TypeSet,
		TypeTinyBlob, TypeMediumBlob, TypeLongBlob, TypeBlob:
		return true
	}
	return false
}

// LongData is what COM_STMT_SEND_LONG_DATA accumulated for one parameter.
type LongData struct {
	Sent      bool
	Data      []byte
	Truncated bool // more was sent than the tracker keeps
}

// paramBlock reads the parameter block shared by COM_STMT_EXECUTE and
// COM_QUERY with query attributes:
//
//	binary<var> NULL bitmap, (n+7)/8 bytes
//	int<1>      new_params_bind_flag
//	if new_params_bind_flag: n x (int<2> type [, string<lenenc> name if withNames])
//	values of the parameters that are neither NULL nor long data
//
// prev holds types bound by an earlier execute, used when the flag is 0.
func readParamBlock(c *cursor, n int, withNames bool, prev []ParamType, long []LongData) (params []Param, bound bool) {
	if n > c.left()*8 {
		// Each parameter needs at least its NULL bit: refuse absurd counts
		// before allocating.
		c.err = malformed("%d parameters cannot fit in %d bytes", n, c.left())
		return nil, false
	}
	nullBitmap := c.take("NULL bitmap", (n+7)/8)
	flag := c.uint8("new_params_bind_flag")
	if c.err != nil {
		return nil, false
	}
	if flag > 1 {
		c.err = malformed("new_params_bind_flag %d, want 0 or 1", flag)
		return nil, false
	}
	bound = flag == 1
	params = make([]Param, n)
	if bound {
		for i := range params {
			t := c.uint16("parameter type")
			params[i].Type = FieldType(t)
			params[i].Unsigned = t>>8&paramUnsigned != 0
			if withNames {
				params[i].Name = c.lenEncString("parameter name")
			}
			if c.err == nil && !ParamTypeAccepted(params[i].Type) {
				c.err = malformed("parameter %d has type %s (0x%04x), which is not accepted in a parameter block", i, params[i].Type, t)
			}
		}
	} else {
		if len(prev) < n {
			c.err = malformed("parameter types not sent and none bound by an earlier execute (%d parameters)", n)
			return nil, false
		}
		for i := range params {
			params[i].ParamType = prev[i]
		}
	}
	var scratch [64]byte
	s := scratch[:0]
	for i := range params {
		if c.err != nil {
			return nil, false
		}
		p := &params[i]
		if i < len(long) && long[i].Sent {
			p.LongData, p.Truncated = true, long[i].Truncated
			p.Value = bytesValue(long[i].Data)
			continue
		}
		if nullBitmap[i/8]&(1<<(i%8)) != 0 || p.Type == TypeNull {
			p.Null = true
			continue
		}
		p.Value, s = readBinaryValue(c, p.Type, p.Unsigned, s)
	}
	if c.err != nil {
		return nil, false
	}
	return params, bound
}

// appendParamBlock writes the block readParamBlock reads. Long-data
// parameters are left out of the values, as clients do.
func appendParamBlock(dst []byte, params []Param, bound, withNames bool) ([]byte, error) {
	start := len(dst)
	dst = append(dst, make([]byte, (len(params)+7)/8)...)
	for i, p := range params {
		if p.Null && !p.LongData {
			dst[start+i/8] |= 1 << (i % 8)
		}
	}
	if !bound {
		dst = append(dst, 0)
	} else {
		dst = append(dst, 1)
		for _, p := range params {
			var hi byte
			if p.Unsigned {
				hi = paramUnsigned
			}
			dst = append(dst, byte(p.Type), hi)
			if withNames {
				dst = AppendLenEncString(dst, p.Name)
			}
		}
	}
	for _, p := range params {
		if p.LongData {
			continue
		}
		var err error
		if dst, err = appendBinaryValue(dst, p.Type, p.Unsigned, p.Value); err != nil {
			return dst, err
		}
	}
	return dst, nil
}
