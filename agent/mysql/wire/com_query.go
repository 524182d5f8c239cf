package wire

// Query is COM_QUERY: a text statement (or several, with
// CLIENT_MULTI_STATEMENTS).
//
//	int<1>      0x03
//	if CLIENT_QUERY_ATTRIBUTES (MySQL 8.0.23+):
//	  int<lenenc> parameter_count
//	  int<lenenc> parameter_set_count (always 1)
//	  if parameter_count > 0: the parameter block, with names (see Param)
//	string<EOF> query
type Query struct {
	Query      string
	Attributes []Param // query attributes; nil without CLIENT_QUERY_ATTRIBUTES or when none were sent
}

func (*Query) Type() CommandType { return ComQuery }

func (q *Query) decode(body []byte, caps Capabilities) error {
	if !caps.Has(ClientQueryAttributes) {
		q.Query = string(body)
		return nil
	}
	c := cursor{b: body}
	n, _ := c.lenEncInt("parameter_count")
	sets, _ := c.lenEncInt("parameter_set_count")
	if c.err != nil {
		return c.err
	}
	if sets != 1 {
		return malformed("COM_QUERY parameter_set_count %d, want 1", sets)
	}
	if n > 0 {
		if n > uint64(c.left())*8 {
			return malformed("COM_QUERY declares %d query attributes in %d bytes", n, c.left())
		}
		q.Attributes, _ = readParamBlock(&c, int(n), true, nil, nil)
	}
	q.Query = string(c.rest())
	return c.err
}

// Encode writes the query; with CLIENT_QUERY_ATTRIBUTES it writes the
// attributes' block first (always as newly bound types, as clients do).
func (q *Query) Encode(dst []byte, caps Capabilities) ([]byte, error) {
	dst = append(dst, byte(ComQuery))
	if caps.Has(ClientQueryAttributes) {
		dst = AppendLenEncInt(dst, uint64(len(q.Attributes)))
		dst = AppendLenEncInt(dst, 1)
		if len(q.Attributes) > 0 {
			var err error
			if dst, err = appendParamBlock(dst, q.Attributes, true, true); err != nil {
				return dst, err
			}
		}
	}
	return append(dst, q.Query...), nil
}
