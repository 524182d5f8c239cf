package wire

// ProcessKill is COM_PROCESS_KILL: int<4> connection id (KILL n).
type ProcessKill struct{ ConnectionID uint32 }

func (*ProcessKill) Type() CommandType { return ComProcessKill }

func (k *ProcessKill) decode(body []byte) error {
	c := cursor{b: body}
	k.ConnectionID = c.uint32("connection id")
	return c.done("COM_PROCESS_KILL")
}

func (k *ProcessKill) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return appendUint32(append(dst, byte(ComProcessKill)), k.ConnectionID), nil
}

// SetOption is COM_SET_OPTION: int<2> option; the server answers EOF (or
// OK under CLIENT_DEPRECATE_EOF) or ERR.
type SetOption struct{ Option uint16 }

// COM_SET_OPTION values.
const (
	OptionMultiStatementsOn  uint16 = 0
	OptionMultiStatementsOff uint16 = 1
)

func (*SetOption) Type() CommandType { return ComSetOption }

func (s *SetOption) decode(body []byte) error {
	c := cursor{b: body}
	s.Option = c.uint16("option")
	return c.done("COM_SET_OPTION")
}

func (s *SetOption) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return appendUint16(append(dst, byte(ComSetOption)), s.Option), nil
}

// FieldList is COM_FIELD_LIST (deprecated): string<NUL> table, then
// string<EOF> wildcard. The server answers with column definitions ending
// in EOF.
type FieldList struct {
	Table    string
	Wildcard string
}

func (*FieldList) Type() CommandType { return ComFieldList }

func (f *FieldList) decode(body []byte) error {
	c := cursor{b: body}
	f.Table = c.nulString("table")
	f.Wildcard = string(c.rest())
	return c.err
}

func (f *FieldList) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	dst = AppendNulString(append(dst, byte(ComFieldList)), f.Table)
	return append(dst, f.Wildcard...), nil
}
