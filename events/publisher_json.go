package events

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Event encoding on the publish path. encoding/json walks every event by
// reflection, calls time.Time's MarshalJSON (an allocation, then a
// validation pass over its output) and copies the result once more; that
// was an eighth of the CPU an async event costs, server included. An event
// type whose fields are all of the plain kinds events use (strings,
// booleans, integers, time.Time, slices of strings or integers, embedded
// structs of those) is instead encoded by a field plan compiled once per
// type (420 ns instead of 960 ns for a 400-byte query, no allocation;
// BenchmarkEncode), byte for byte what encoding/json writes with HTML
// escaping off: the tests compare the two on every registered type with
// random values, and FuzzEventJSON on arbitrary strings. Any other type
// keeps encoding/json.

type fieldKind uint8

const (
	kString fieldKind = iota
	kBool
	kInt
	kUint
	kTime
	kStrings
	kInts
	kUints
)

type planField struct {
	key       string // `"name":`
	offset    uintptr
	kind      fieldKind
	size      uintptr // of integer kinds, or of the elements of integer slices
	omitEmpty bool
}

type jsonPlan struct{ fields []planField }

// plans maps a struct type to its *jsonPlan, or to nil when the type must
// go through encoding/json.
var plans sync.Map

var (
	timeType          = reflect.TypeFor[time.Time]()
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// appendEvent appends the JSON of ev to dst.
func appendEvent(dst []byte, ev Event) ([]byte, error) {
	v := reflect.ValueOf(ev)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		if plan := planFor(v.Type().Elem()); plan != nil {
			if out, ok := plan.append(dst, v.UnsafePointer()); ok {
				return out, nil
			}
		}
	}
	return appendJSON(dst, ev)
}

func planFor(t reflect.Type) *jsonPlan {
	if p, ok := plans.Load(t); ok {
		return p.(*jsonPlan)
	}
	p := compilePlan(t)
	plans.Store(t, p)
	return p
}

// compilePlan returns nil for any type it cannot encode exactly as
// encoding/json does.
func compilePlan(t reflect.Type) *jsonPlan {
	if t.Kind() != reflect.Struct || marshals(t) {
		return nil
	}
	p := &jsonPlan{}
	seen := map[string]bool{}
	if !p.add(t, 0, seen) {
		return nil
	}
	return p
}

func marshals(t reflect.Type) bool {
	pt := reflect.PointerTo(t)
	return t.Implements(jsonMarshalerType) || pt.Implements(jsonMarshalerType) ||
		t.Implements(textMarshalerType) || pt.Implements(textMarshalerType)
}

// add appends the fields of struct t at offset base, flattening embedded
// structs. A name seen twice would need encoding/json's dominance rules:
// such types are left to it.
func (p *jsonPlan) add(t reflect.Type, base uintptr, seen map[string]bool) bool {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, hasTag := f.Tag.Lookup("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && !hasTag {
			if f.Type.Kind() != reflect.Struct || marshals(f.Type) {
				return false
			}
			if !p.add(f.Type, base+f.Offset, seen) {
				return false
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		omitEmpty := false
		for opts != "" {
			var o string
			o, opts, _ = strings.Cut(opts, ",")
			if o != "omitempty" {
				return false // string, omitzero, …: encoding/json's business
			}
			omitEmpty = true
		}
		if name == "" {
			name = f.Name
		}
		if !plainName(name) || seen[name] {
			return false
		}
		seen[name] = true
		pf := planField{key: `"` + name + `":`, offset: base + f.Offset, omitEmpty: omitEmpty, size: f.Type.Size()}
		switch ft := f.Type; {
		case ft == timeType:
			pf.kind = kTime
		case marshals(ft):
			return false
		case ft.Kind() == reflect.String:
			pf.kind = kString
		case ft.Kind() == reflect.Bool:
			pf.kind = kBool
		case ft.Kind() >= reflect.Int && ft.Kind() <= reflect.Int64:
			pf.kind = kInt
		case ft.Kind() >= reflect.Uint && ft.Kind() <= reflect.Uint64:
			pf.kind = kUint
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.String && !marshals(ft.Elem()):
			pf.kind = kStrings
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() >= reflect.Int && ft.Elem().Kind() <= reflect.Int64 && !marshals(ft.Elem()):
			pf.kind, pf.size = kInts, ft.Elem().Size()
		// []byte is base64 in encoding/json, hence Uint16 upwards only.
		case ft.Kind() == reflect.Slice && (ft.Elem().Kind() == reflect.Uint || ft.Elem().Kind() >= reflect.Uint16 && ft.Elem().Kind() <= reflect.Uint64) && !marshals(ft.Elem()):
			pf.kind, pf.size = kUints, ft.Elem().Size()
		default:
			return false
		}
		p.fields = append(p.fields, pf)
	}
	return true
}

// plainName is a JSON key that needs no escaping.
func plainName(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return s != ""
}

// append encodes the struct at base; ok is false when a value needs
// encoding/json after all (a time it refuses), and dst is then unchanged.
func (p *jsonPlan) append(dst []byte, base unsafe.Pointer) (out []byte, ok bool) {
	start := len(dst)
	dst = append(dst, '{')
	first := true
	for i := range p.fields {
		f := &p.fields[i]
		ptr := unsafe.Add(base, f.offset)
		mark := len(dst)
		if !first {
			dst = append(dst, ',')
		}
		dst = append(dst, f.key...)
		switch f.kind {
		case kString:
			s := *(*string)(ptr)
			if f.omitEmpty && s == "" {
				dst = dst[:mark]
				continue
			}
			dst = appendJSONString(dst, s)
		case kBool:
			b := *(*bool)(ptr)
			if f.omitEmpty && !b {
				dst = dst[:mark]
				continue
			}
			dst = strconv.AppendBool(dst, b)
		case kInt:
			n := loadInt(ptr, f.size)
			if f.omitEmpty && n == 0 {
				dst = dst[:mark]
				continue
			}
			dst = strconv.AppendInt(dst, n, 10)
		case kUint:
			n := loadUint(ptr, f.size)
			if f.omitEmpty && n == 0 {
				dst = dst[:mark]
				continue
			}
			dst = strconv.AppendUint(dst, n, 10)
		case kTime:
			t := (*time.Time)(ptr)
			if y := t.Year(); y < 0 || y > 9999 {
				return dst[:start], false
			}
			if _, off := t.Zone(); off <= -24*3600 || off >= 24*3600 {
				return dst[:start], false
			}
			dst = append(dst, '"')
			dst = t.AppendFormat(dst, time.RFC3339Nano)
			dst = append(dst, '"')
		case kStrings:
			ss := *(*[]string)(ptr)
			if f.omitEmpty && len(ss) == 0 {
				dst = dst[:mark]
				continue
			}
			if ss == nil {
				dst = append(dst, "null"...)
				break
			}
			dst = append(dst, '[')
			for j, s := range ss {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = appendJSONString(dst, s)
			}
			dst = append(dst, ']')
		case kInts, kUints:
			h := (*sliceHeader)(ptr)
			if f.omitEmpty && h.len == 0 {
				dst = dst[:mark]
				continue
			}
			if h.data == nil {
				dst = append(dst, "null"...)
				break
			}
			dst = append(dst, '[')
			for j := range h.len {
				if j > 0 {
					dst = append(dst, ',')
				}
				e := unsafe.Add(h.data, uintptr(j)*f.size)
				if f.kind == kInts {
					dst = strconv.AppendInt(dst, loadInt(e, f.size), 10)
				} else {
					dst = strconv.AppendUint(dst, loadUint(e, f.size), 10)
				}
			}
			dst = append(dst, ']')
		}
		first = false
	}
	return append(dst, '}'), true
}

// sliceHeader is the layout of every Go slice.
type sliceHeader struct {
	data     unsafe.Pointer
	len, cap int
}

func loadInt(p unsafe.Pointer, size uintptr) int64 {
	switch size {
	case 1:
		return int64(*(*int8)(p))
	case 2:
		return int64(*(*int16)(p))
	case 4:
		return int64(*(*int32)(p))
	}
	return *(*int64)(p)
}

func loadUint(p unsafe.Pointer, size uintptr) uint64 {
	switch size {
	case 1:
		return uint64(*(*uint8)(p))
	case 2:
		return uint64(*(*uint16)(p))
	case 4:
		return uint64(*(*uint32)(p))
	}
	return *(*uint64)(p)
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as encoding/json does without HTML escaping:
// control characters escaped, invalid UTF-8 replaced by \ufffd, and U+2028
// and U+2029 escaped.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
