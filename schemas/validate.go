package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/tollgate-db/tollgate/events"
)

// files holds the generated schemas. Every *.json in this directory is
// generated; the up-to-date test keeps them equal to the registry.
//
//go:embed *.json
var files embed.FS

// typeRE is the registry's rule for event type names. Checking it before
// looking a type up keeps arbitrary input away from the file system lookup.
var typeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`)

var (
	compileMu sync.Mutex
	compiler  *jsonschema.Compiler
	compiled  sync.Map // event type -> *jsonschema.Schema

	printer = message.NewPrinter(language.English)
)

// Error is returned by Validate for an event that does not match its schema
// or that has no schema.
type Error struct {
	// Type is the event's type as read from it; empty when it had none.
	Type string
	// Fields are the JSON names (a/b/0 for nested values) of the fields that
	// failed, sorted; empty when the event as a whole is wrong (not an
	// object, no or unknown type).
	Fields []string
	msg    string
}

func (e *Error) Error() string { return e.msg }

// Schema returns the checked-in JSON Schema of an event type.
func Schema(typ string) ([]byte, bool) {
	if !typeRE.MatchString(typ) {
		return nil, false
	}
	b, err := files.ReadFile(typ + ".json")
	return b, err == nil
}

// Types lists the event types that have a schema, sorted.
func Types() []string {
	names, _ := fs.Glob(files, "*.json")
	var out []string
	for _, n := range names {
		if t := strings.TrimSuffix(n, ".json"); typeRE.MatchString(t) {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// Validate checks one encoded event against the schema of the type named in
// its "type" field. The error names the type and every failing field.
func Validate(event []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(event))
	if err != nil {
		return &Error{msg: "schemas: event is not valid JSON: " + err.Error()}
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return &Error{msg: "schemas: event is not a JSON object"}
	}
	typ, ok := obj["type"].(string)
	if !ok || typ == "" {
		return &Error{Fields: []string{"type"}, msg: `schemas: event has no "type" string field`}
	}
	sch, err := schemaFor(typ)
	if err != nil {
		return err
	}
	err = sch.Validate(obj)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &Error{Type: typ, msg: fmt.Sprintf("schemas: %s event: %v", typ, err)}
	}
	return describe(typ, ve)
}

// ValidateEvent encodes ev as the publisher does and validates it; it also
// checks that ev's Go type is the one registered for the type it carries.
func ValidateEvent(ev events.Event) error {
	if ev == nil {
		return &Error{msg: "schemas: nil event"}
	}
	if s, ok := events.SpecOf(ev); ok && ev.Header().Type != "" && ev.Header().Type != s.Type {
		return &Error{Type: ev.Header().Type, Fields: []string{"type"},
			msg: fmt.Sprintf("schemas: %T carries type %q but is registered as %q", ev, ev.Header().Type, s.Type)}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("schemas: encoding %T: %w", ev, err)
	}
	return Validate(b)
}

// schemaFor compiles the schema of typ on first use and caches it. Unknown
// types are not cached, so input naming many types cannot grow the cache.
func schemaFor(typ string) (*jsonschema.Schema, error) {
	if s, ok := compiled.Load(typ); ok {
		return s.(*jsonschema.Schema), nil
	}
	raw, ok := Schema(typ)
	if !ok {
		return nil, &Error{Type: typ, Fields: []string{"type"},
			msg: fmt.Sprintf("schemas: unknown event type %q: no schema for it (a new type needs make generate)", typ)}
	}
	compileMu.Lock()
	defer compileMu.Unlock()
	if s, ok := compiled.Load(typ); ok {
		return s.(*jsonschema.Schema), nil
	}
	if compiler == nil {
		compiler = jsonschema.NewCompiler()
		compiler.DefaultDraft(jsonschema.Draft2020)
		// time must be a real RFC 3339 date-time, not any string.
		compiler.AssertFormat()
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("schemas: schema of %s: %w", typ, err)
	}
	url := typ + ".json"
	if m, ok := doc.(map[string]any); ok {
		if id, ok := m["$id"].(string); ok {
			url = id
		}
	}
	if err := compiler.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("schemas: schema of %s: %w", typ, err)
	}
	s, err := compiler.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("schemas: schema of %s: %w", typ, err)
	}
	compiled.Store(typ, s)
	return s, nil
}

// describe turns the validator's error tree into one line that names the
// type and each failing field.
func describe(typ string, ve *jsonschema.ValidationError) error {
	var problems, fields []string
	seen := map[string]bool{}
	addField := func(f string) {
		if !seen[f] {
			seen[f] = true
			fields = append(fields, f)
		}
	}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		at := strings.Join(e.InstanceLocation, "/")
		switch k := e.ErrorKind.(type) {
		case *kind.Required:
			for _, m := range k.Missing {
				f := join(at, m)
				addField(f)
				problems = append(problems, fmt.Sprintf("missing required field %q", f))
			}
		case *kind.AdditionalProperties:
			for _, p := range k.Properties {
				f := join(at, p)
				addField(f)
				problems = append(problems, fmt.Sprintf("unknown field %q", f))
			}
		default:
			msg := e.ErrorKind.LocalizedString(printer)
			// These two quote the offending string, which may be statement
			// text or a secret sent in the wrong field: say what was wanted.
			switch k := e.ErrorKind.(type) {
			case *kind.Format:
				msg = "not a valid " + k.Want
			case *kind.Pattern:
				msg = fmt.Sprintf("does not match pattern %q", k.Want)
			}
			if at == "" {
				problems = append(problems, msg)
				return
			}
			addField(at)
			problems = append(problems, fmt.Sprintf("field %q: %s", at, msg))
		}
	}
	walk(ve)
	sort.Strings(fields)
	sort.Strings(problems)
	return &Error{Type: typ, Fields: fields,
		msg: fmt.Sprintf("schemas: invalid %s event: %s", typ, strings.Join(problems, "; "))}
}

func join(at, name string) string {
	if at == "" {
		return name
	}
	return at + "/" + name
}
