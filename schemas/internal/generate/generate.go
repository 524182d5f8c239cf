// Package generate turns the event registry of package events into the JSON
// Schema files checked in under schemas/. It is kept apart from package
// schemas so that importing the validator does not pull in the reflection
// library, and so the up-to-date test can regenerate into memory.
package generate

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/invopop/jsonschema"

	"github.com/tollgate-db/tollgate/events"
)

const (
	// Draft is the JSON Schema dialect of every generated file.
	Draft = "https://json-schema.org/draft/2020-12/schema"
	// BaseID prefixes the $id of every generated schema: BaseID + <type>.json.
	BaseID = "https://github.com/tollgate-db/tollgate/schemas/"
	// IndexFile lists every type with its codes and schema file.
	IndexFile = "index.json"
	// TruncatedPattern matches the flags the publisher adds when it shortens
	// a large field (<field>_truncated: true), so a truncated event still
	// validates although additional properties are otherwise refused.
	TruncatedPattern = "^[a-z0-9_]+_truncated$"
)

// FileName is the schema file of an event type.
func FileName(typ string) string { return typ + ".json" }

// Files renders the schema of every spec and the index, keyed by file name.
// The output depends only on the specs, byte for byte.
func Files(specs []events.Spec) (map[string][]byte, error) {
	specs = append([]events.Spec(nil), specs...)
	sort.Slice(specs, func(i, j int) bool { return specs[i].Type < specs[j].Type })

	out := make(map[string][]byte, len(specs)+1)
	index := map[string]any{}
	byCode := map[string]any{}
	for _, s := range specs {
		doc, err := Schema(s)
		if err != nil {
			return nil, err
		}
		b, err := encode(doc)
		if err != nil {
			return nil, fmt.Errorf("schema of %s: %w", s.Type, err)
		}
		name := FileName(s.Type)
		if _, dup := out[name]; dup || name == IndexFile {
			return nil, fmt.Errorf("event type %s: file name %s used twice", s.Type, name)
		}
		out[name] = b
		codes := codesOf(s)
		index[s.Type] = map[string]any{"codes": codes, "file": name, "description": s.Doc}
		for _, c := range codes {
			byCode[c.(string)] = s.Type
		}
	}
	b, err := encode(map[string]any{
		"$comment": "Generated from the event registry in events/ by make generate; do not edit.",
		"types":    index,
		"codes":    byCode,
	})
	if err != nil {
		return nil, err
	}
	out[IndexFile] = b
	return out, nil
}

// Write renders every registered event type into dir and removes the *.json
// files there that no registered type produces any more. Files whose bytes
// are unchanged are left alone so their modification time stays.
func Write(dir string) error {
	files, err := Files(events.Specs())
	if err != nil {
		return err
	}
	old, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return err
	}
	for _, p := range old {
		if _, keep := files[filepath.Base(p)]; !keep {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if cur, err := os.ReadFile(p); err == nil && bytes.Equal(cur, b) {
			continue
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func codesOf(s events.Spec) []any {
	codes := []any{s.Code}
	if s.FailCode != "" {
		codes = append(codes, s.FailCode)
	}
	return codes
}

// Schema builds the schema document of one event type as plain JSON values
// (maps, slices, strings, json.Number), ready to encode.
func Schema(s events.Spec) (map[string]any, error) {
	if s.New == nil {
		return nil, fmt.Errorf("event type %s: spec has no New", s.Type)
	}
	zero := s.New()
	t := reflect.TypeOf(zero)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("event type %s: Go type %s is not a struct", s.Type, t)
	}

	r := &jsonschema.Reflector{
		// One self-contained document per type: embedded and nested structs
		// are written in place rather than as $defs.
		ExpandedStruct: true,
		DoNotReference: true,
		// $id is set below from the event type, not from the Go package.
		Anonymous: true,
		Mapper:    textTypes,
	}
	raw, err := json.Marshal(r.ReflectFromType(t))
	if err != nil {
		return nil, fmt.Errorf("event type %s: %w", s.Type, err)
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("event type %s: %w", s.Type, err)
	}

	props, _ := doc["properties"].(map[string]any)
	for _, name := range []string{"type", "code", "time"} {
		if _, ok := props[name].(map[string]any); !ok {
			return nil, fmt.Errorf("event type %s: Go type %s has no %q field; embed events.Envelope", s.Type, t, name)
		}
	}
	if err := refine(doc, t); err != nil {
		return nil, fmt.Errorf("event type %s: %w", s.Type, err)
	}

	doc["$schema"] = Draft
	doc["$id"] = BaseID + FileName(s.Type)
	doc["title"] = s.Type
	doc["description"] = s.Doc
	doc["additionalProperties"] = false
	doc["patternProperties"] = map[string]any{
		TruncatedPattern: map[string]any{
			"type":        "boolean",
			"description": "Set when the publisher shortened the named field; the full value is kept in the object store under the event id",
		},
	}
	props["type"].(map[string]any)["const"] = s.Type
	props["code"].(map[string]any)["enum"] = codesOf(s)
	tm := props["time"].(map[string]any)
	tm["type"], tm["format"] = "string", "date-time"

	if err := checkAgainstEncoding(doc, zero); err != nil {
		return nil, fmt.Errorf("event type %s: %w", s.Type, err)
	}
	return doc, nil
}

var (
	timeType      = reflect.TypeOf(time.Time{})
	textMarshaler = reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem()
	jsonMarshaler = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
)

// textTypes maps types that encoding/json writes through MarshalText (net.IP,
// netip.Addr, enum types) to a string, where the reflection library would
// describe their Go kind or, for net.IP, allow IPv4 only. Types with their own
// MarshalJSON are left to the reflection; the validation test of every
// registered type's zero value catches a schema that disagrees with them.
func textTypes(t reflect.Type) *jsonschema.Schema {
	if t == timeType || implements(t, jsonMarshaler) || !implements(t, textMarshaler) {
		return nil
	}
	return &jsonschema.Schema{Type: "string"}
}

func implements(t, iface reflect.Type) bool {
	return t.Implements(iface) || (t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(iface))
}

// refine makes the schema say what encoding/json really writes for t, where
// the reflection library is looser: unsigned integers are never negative, and
// a nil slice, map or pointer without omitempty is written as null.
func refine(s map[string]any, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if textTypes(t) != nil {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if t == timeType {
			return nil
		}
		props, _ := s["properties"].(map[string]any)
		if props == nil {
			return nil
		}
		for _, f := range jsonFields(t) {
			if props[f.name] == true {
				continue // any value (an interface field): nothing to refine
			}
			p, ok := props[f.name].(map[string]any)
			if !ok {
				return fmt.Errorf("field %s (%s): no property %q in the schema", f.goName, f.typ, f.name)
			}
			if err := refine(p, f.typ); err != nil {
				return err
			}
			if f.desc != "" {
				p["description"] = f.desc
			}
			if !f.omitEmpty && nilable(f.typ) {
				props[f.name] = orNull(p)
			}
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return nil // []byte is a base64 string
		}
		if items, ok := s["items"].(map[string]any); ok {
			return refine(items, t.Elem())
		}
	case reflect.Map:
		if vals, ok := s["additionalProperties"].(map[string]any); ok {
			return refine(vals, t.Elem())
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if _, set := s["minimum"]; !set && s["type"] == "integer" {
			s["minimum"] = json.Number("0")
		}
	}
	return nil
}

// nilable says whether encoding/json writes null for a nil value of t. A nil
// slice or map with its own marshaler (net.IP) is passed to it instead.
func nilable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface:
		return true
	case reflect.Map, reflect.Slice:
		return !implements(t, jsonMarshaler) && !implements(t, textMarshaler)
	}
	return false
}

// orNull widens a property to also accept null, keeping its description at
// the top so documentation tools still find it.
func orNull(p map[string]any) map[string]any {
	if typ, ok := p["type"].(string); ok {
		p["type"] = []any{typ, "null"}
		return p
	}
	if _, ok := p["type"]; !ok && len(p) <= 1 {
		return p // no type constraint (interface{}): null is already allowed
	}
	out := map[string]any{"anyOf": []any{p, map[string]any{"type": "null"}}}
	if d, ok := p["description"]; ok {
		out["description"] = d
	}
	return out
}

type jsonField struct {
	name, goName string
	typ          reflect.Type
	omitEmpty    bool
	desc         string
}

// jsonFields lists the fields encoding/json writes for struct t, with
// embedded structs flattened. Name clashes between embedded structs are not
// resolved here; checkAgainstEncoding catches them.
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				out = append(out, jsonFields(et)...)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		omit := false
		for _, o := range strings.Split(opts, ",") {
			if o == "omitempty" || o == "omitzero" {
				omit = true
			}
		}
		out = append(out, jsonField{name: name, goName: f.Name, typ: f.Type, omitEmpty: omit,
			desc: tagDescription(f.Tag.Get("jsonschema"))})
	}
	return out
}

// tagDescription reads description= from a jsonschema struct tag. The
// reflection library ends every keyword at a comma unless it is escaped as
// \, which cuts prose such as "I info, W warning" short; here a keyword ends
// only at a comma directly followed by the next keyword (no space), so
// descriptions keep their commas either way.
func tagDescription(tag string) string {
	var seg strings.Builder
	flush := func() (string, bool) {
		s := seg.String()
		seg.Reset()
		d, ok := strings.CutPrefix(s, "description=")
		return d, ok
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		switch {
		case c == '\\' && i+1 < len(tag) && tag[i+1] == ',':
			seg.WriteByte(',')
			i++
		case c == ',' && (i+1 == len(tag) || tag[i+1] != ' '):
			if d, ok := flush(); ok {
				return d
			}
		default:
			seg.WriteByte(c)
		}
	}
	if d, ok := flush(); ok {
		return d
	}
	return ""
}

// checkAgainstEncoding compares the schema with what encoding/json writes for
// the zero value: every key written must be a property, and every required
// property must be written. A mismatch means the Go type does something the
// reflection cannot see (a custom MarshalJSON, a name clash, a nil embedded
// pointer) and the schema would reject real events.
func checkAgainstEncoding(doc map[string]any, zero events.Event) error {
	b, err := json.Marshal(zero)
	if err != nil {
		return fmt.Errorf("encoding the zero value: %w", err)
	}
	var written map[string]any
	if err := json.Unmarshal(b, &written); err != nil {
		return fmt.Errorf("the zero value does not encode as a JSON object: %s", b)
	}
	props, _ := doc["properties"].(map[string]any)
	var problems []string
	for k := range written {
		if _, ok := props[k]; !ok {
			problems = append(problems, fmt.Sprintf("encoding/json writes %q but the schema has no such property", k))
		}
	}
	req, _ := doc["required"].([]any)
	for _, r := range req {
		if _, ok := written[r.(string)]; !ok {
			problems = append(problems, fmt.Sprintf("property %q is required but encoding/json does not write it for the zero value", r))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// encode writes v with sorted keys, two-space indentation, no HTML escaping
// and a trailing newline, so the same registry always gives the same bytes.
func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
