package tds

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Common type infos for encoders.
var (
	// DefaultCollation is Latin1_General_CI_AS.
	DefaultCollation = [5]byte{0x09, 0x04, 0xD0, 0x00, 0x34}

	IntN4     = TypeInfo{Type: TypeIntN, Size: 4}
	IntN8     = TypeInfo{Type: TypeIntN, Size: 8}
	FltN8     = TypeInfo{Type: TypeFltN, Size: 8}
	BitN      = TypeInfo{Type: TypeBitN, Size: 1}
	NVarChar  = TypeInfo{Type: TypeNVarChar, Size: 8000, Collation: DefaultCollation}
	NVarMax   = TypeInfo{Type: TypeNVarChar, Size: int(maxLen), Collation: DefaultCollation}
	VarBinary = TypeInfo{Type: TypeBigVarBinary, Size: 8000}
)

// AppendTypeInfo appends a TYPE_INFO (as in COLMETADATA without table
// names, or in an RPC parameter).
func AppendTypeInfo(dst []byte, t *TypeInfo) []byte {
	dst = append(dst, t.Type)
	switch t.Type {
	case TypeGUID, TypeIntN, TypeBitN, TypeFltN, TypeMoneyN, TypeDateTimeN, TypeChar, TypeVarChar, TypeBinary, TypeVarBinary:
		dst = append(dst, byte(t.Size))
	case TypeDecimal, TypeNumeric, TypeDecimalN, TypeNumericN:
		dst = append(dst, byte(t.Size), t.Precision, t.Scale)
	case TypeTimeN, TypeDateTime2N, TypeDateTimeOffsetN:
		dst = append(dst, t.Scale)
	case TypeBigVarBinary, TypeBigBinary:
		dst = appendU16(dst, uint16(t.Size))
	case TypeBigVarChar, TypeBigChar, TypeNVarChar, TypeNChar:
		dst = appendU16(dst, uint16(t.Size))
		dst = append(dst, t.Collation[:]...)
	case TypeText, TypeNText:
		dst = appendU32(dst, uint32(t.Size))
		dst = append(dst, t.Collation[:]...)
	case TypeImage, TypeVariant:
		dst = appendU32(dst, uint32(t.Size))
	case TypeXML:
		dst = append(dst, 0)
	}
	return dst
}

// valueData is the data of a string or []byte v as a value of the text or
// binary type t: a string in UCS-2 for the Unicode types (NVARCHAR, NCHAR
// and XML), as it is for the single-byte ones.
func valueData(t *TypeInfo, v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		if t.Type == TypeNVarChar || t.Type == TypeNChar || t.Type == TypeXML {
			return AppendUCS2(nil, x), nil
		}
		return []byte(x), nil
	case []byte:
		return x, nil
	}
	return nil, fmt.Errorf("tds: cannot encode %T as %s", v, t.String())
}

// AppendValue appends v as a value of t in the encoding of rows and RPC
// parameters. Supported: nil (NULL), int64, int, bool, float64, string
// (for Unicode and single-byte text types) and []byte (binary types).
func AppendValue(dst []byte, t *TypeInfo, v any) ([]byte, error) {
	if t.PLP() {
		if v == nil {
			return appendU64(dst, plpNull), nil
		}
		data, err := valueData(t, v)
		if err != nil {
			return nil, err
		}
		dst = appendU64(dst, uint64(len(data)))
		if len(data) > 0 {
			dst = appendU32(dst, uint32(len(data)))
			dst = append(dst, data...)
		}
		return appendU32(dst, 0), nil
	}
	switch t.Type {
	case TypeIntN, TypeBitN, TypeFltN:
		if v == nil {
			return append(dst, 0), nil
		}
		dst = append(dst, byte(t.Size))
		switch x := v.(type) {
		case int:
			return appendInt(dst, int64(x), t.Size), nil
		case int64:
			return appendInt(dst, x, t.Size), nil
		case bool:
			if x {
				return append(dst, 1), nil
			}
			return append(dst, 0), nil
		case float64:
			if t.Size == 4 {
				return appendU32(dst, math.Float32bits(float32(x))), nil
			}
			return appendU64(dst, math.Float64bits(x)), nil
		}
	case TypeInt4:
		if x, ok := v.(int64); ok {
			return appendU32(dst, uint32(x)), nil
		}
	case TypeBigVarChar, TypeBigChar, TypeNVarChar, TypeNChar, TypeBigVarBinary, TypeBigBinary:
		if v == nil {
			return appendU16(dst, maxLen), nil
		}
		data, err := valueData(t, v)
		if err != nil {
			return nil, err
		}
		if len(data) > t.Size {
			return nil, fmt.Errorf("tds: %d bytes do not fit %s", len(data), t.String())
		}
		dst = appendU16(dst, uint16(len(data)))
		return append(dst, data...), nil
	}
	return nil, fmt.Errorf("tds: cannot encode %T as %s", v, t.String())
}

func appendInt(dst []byte, v int64, size int) []byte {
	switch size {
	case 1:
		return append(dst, byte(v))
	case 2:
		return binary.LittleEndian.AppendUint16(dst, uint16(v))
	case 4:
		return binary.LittleEndian.AppendUint32(dst, uint32(v))
	}
	return binary.LittleEndian.AppendUint64(dst, uint64(v))
}

// ParamValue is a parameter for AppendRPC.
type ParamValue struct {
	Name   string
	Status byte
	Type   TypeInfo
	Value  any
	// Raw, when set, is written instead of Type and Value (to build
	// malformed requests in tests).
	Raw []byte
}

// Call is a procedure call for AppendRPC: ProcID for a well-known
// procedure, or ProcName.
type Call struct {
	ProcName string
	ProcID   uint16
	Options  uint16
	Params   []ParamValue
}

// AppendRPC appends an RPC request payload (TDS 7.2+) for calls.
func AppendRPC(dst []byte, txn uint64, calls ...Call) ([]byte, error) {
	dst = AppendAllHeaders(dst, txn, 1)
	for i, c := range calls {
		if i > 0 {
			dst = append(dst, rpcBatchFlag)
		}
		if c.ProcID != 0 {
			dst = appendU16(dst, 0xFFFF)
			dst = appendU16(dst, c.ProcID)
		} else {
			dst = appendUSVarchar(dst, c.ProcName)
		}
		dst = appendU16(dst, c.Options)
		for _, p := range c.Params {
			dst = appendBVarchar(dst, p.Name)
			dst = append(dst, p.Status)
			if p.Raw != nil {
				dst = append(dst, p.Raw...)
				continue
			}
			dst = AppendTypeInfo(dst, &p.Type)
			var err error
			if dst, err = AppendValue(dst, &p.Type, p.Value); err != nil {
				return nil, err
			}
		}
	}
	return dst, nil
}

// AppendSQLBatch appends a SQLBatch payload (TDS 7.2+).
func AppendSQLBatch(dst []byte, txn uint64, text string) []byte {
	dst = AppendAllHeaders(dst, txn, 1)
	return AppendUCS2(dst, text)
}
