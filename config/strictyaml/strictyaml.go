// Package strictyaml decodes YAML strictly and says what was wrong in the
// words of the file's author: every key the Go type has no field for, and
// every value of the wrong type, is an error naming the dotted key path and
// its line ("line 4: unknown key \"proxy.listn\"").
//
// It exists because the configuration, the roles and the exporter settings
// hold security settings: a misspelt deny rule or TLS option silently ignored
// is worse than a refusal to start. yaml.v3 can refuse unknown keys
// (Decoder.KnownFields) but only for a whole document, and its messages name
// Go types ("field listn not found in type config.Proxy"); this package adds
// the same check for a subtree (Node.Decode has no KnownFields mode) and
// rewords the messages so they name keys.
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// Decode decodes the single YAML document b into v (a pointer), refusing
// keys v has no field for. Type errors are reworded to name the key path and
// line; other errors (syntax, errors from a field's own UnmarshalYAML) are
// returned unchanged. An empty document decodes to nothing and is no error.
func Decode(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var root yaml.Node
	_ = yaml.Unmarshal(b, &root)
	return Reword(err, &root, v)
}

// DecodeNode decodes the subtree n into v (a pointer), refusing keys v has
// no field for, which yaml.v3's Node.Decode does not do by itself. Key paths
// in errors start with where (e.g. "exporters[0].settings"); errors that are
// not about a key are prefixed with "where: ". A nil, empty or null node
// decodes to nothing.
func DecodeNode(n *yaml.Node, v any, where string) error {
	if n == nil || n.Kind == 0 {
		return nil
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Tag == "!!null" {
		return nil
	}
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer {
		return fmt.Errorf("%s: decode into non-pointer %T", where, v)
	}
	var errs []string
	checkKeys(n, t.Elem(), where, &errs)
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	if err := n.Decode(v); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return fmt.Errorf("%s: %w", where, err)
		}
		return reword(te, lineKeys(n, where), v)
	}
	return nil
}

// Documents decodes every document of b (separated by ---) into a T,
// strictly, and returns each with its node from a lenient pass over the
// same bytes, so that errors found after decoding, which only know a
// field's path, can still name its line. what prefixes the errors that are
// not about a key ("roles", "connectors"). Empty documents come back as
// zero values for the caller to skip.
func Documents[T any](b []byte, what string) ([]T, []*yaml.Node, error) {
	var docs []*yaml.Node
	nd := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var n yaml.Node
		if err := nd.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		docs = append(docs, &n)
	}
	var out []T
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	for i := 0; ; i++ {
		var v T
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, nil, fmt.Errorf("%s: %w", what, err)
			}
			var doc *yaml.Node
			if i < len(docs) {
				doc = docs[i]
			}
			return nil, nil, Reword(err, doc, &v)
		}
		out = append(out, v)
	}
	return out, docs, nil
}

// Reword rewrites a yaml.v3 *TypeError from decoding root into v so that
// each message names the key path and line instead of Go types. root is a
// lenient parse of the same document (for a stream of documents, the one
// that failed). Errors that are not type errors are returned unchanged.
func Reword(err error, root *yaml.Node, v any) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	return reword(te, lineKeys(root, ""), v)
}

func reword(te *yaml.TypeError, keys keyLines, v any) error {
	words := typeWords(reflect.TypeOf(v))
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		var line int
		_, _ = fmt.Sscanf(m, "line %d:", &line)
		key := keys.first[line]
		switch {
		case strings.Contains(m, " not found in type "):
			// "field listn not found in type config.Proxy": several keys
			// may share the line (a flow mapping), so pick the one named.
			var field string
			if i := strings.Index(m, "field "); i >= 0 {
				field, _, _ = strings.Cut(m[i+len("field "):], " not found in type ")
			}
			m = fmt.Sprintf("line %d: unknown key %q", line, keys.named(line, field))
		case strings.Contains(m, "cannot unmarshal "):
			// "cannot unmarshal !!str `three` into int"
			val := m[strings.Index(m, "cannot unmarshal ")+len("cannot unmarshal "):]
			want := ""
			if i := strings.Index(val, " into "); i >= 0 {
				want, val = val[i+len(" into "):], val[:i]
			}
			m = fmt.Sprintf("line %d: key %q has the wrong type: %s is not %s", line, key, val, typeWord(want, words))
		case line > 0 && key != "":
			m = fmt.Sprintf("%s (key %q)", m, key)
		}
		msgs = append(msgs, m)
	}
	return errors.New(strings.Join(msgs, "; "))
}

// KeysByLine maps each line that holds a key (and the line of its value) to
// the dotted path of that key ("db_service.databases[0].name"), so an error
// that only knows a line can name the key. Inside a flow mapping ({a: b})
// the line keeps the enclosing key, which is what an error on it is about.
func KeysByLine(root *yaml.Node) map[int]string {
	return lineKeys(root, "").first
}

// LinesByKey inverts KeysByLine: each key path to the first line naming it.
func LinesByKey(keys map[int]string) map[string]int {
	out := make(map[string]int, len(keys))
	for line, k := range keys {
		if l, ok := out[k]; !ok || line < l {
			out[k] = line
		}
	}
	return out
}

// LineOf finds the line of a key path in lines (from LinesByKey), or of its
// nearest parent that has one: "spec.allow.db_users[1]" falls back to
// "spec.allow.db_users", then "spec.allow".
func LineOf(lines map[string]int, path string) (int, bool) {
	for p := path; p != ""; {
		if l, ok := lines[p]; ok {
			return l, true
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0, false
}

// keyLines holds, per line, the key path an error on that line is about
// (first) and every key path written on it (all), in order.
type keyLines struct {
	first map[int]string
	all   map[int][]string
}

// named is the key path on line whose last element is field, or the line's
// key when none is.
func (k keyLines) named(line int, field string) string {
	for _, p := range k.all[line] {
		if field != "" && (p == field || strings.HasSuffix(p, "."+field)) {
			return p
		}
	}
	return k.first[line]
}

func lineKeys(root *yaml.Node, prefix string) keyLines {
	out := keyLines{first: map[int]string{}, all: map[int][]string{}}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				out.all[k.Line] = append(out.all[k.Line], p)
				if _, taken := out.first[k.Line]; !taken || n.Style&yaml.FlowStyle == 0 {
					out.first[k.Line] = p
				}
				if _, taken := out.first[v.Line]; !taken {
					out.first[v.Line] = p
				}
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if _, taken := out.first[c.Line]; !taken {
					out.first[c.Line] = p
				}
				walk(c, p)
			}
		}
	}
	if root != nil {
		walk(root, prefix)
	}
	return out
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// checkKeys reports the keys of n that type t has no field for. Types that
// decode themselves (yaml.Unmarshaler) are trusted with their own keys.
func checkKeys(n *yaml.Node, t reflect.Type, path string, errs *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := Fields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, fmt.Sprintf("line %d: unknown key %q", k.Line, p))
				continue
			}
			checkKeys(v, ft, p, errs)
		}
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), errs)
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Fields maps the YAML keys of struct type t to their field types, as
// yaml.v3 sees them: the yaml tag's name or the lowercased field name,
// fields tagged "-" left out, ",inline" structs merged in.
func Fields(t reflect.Type) map[string]reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	out := map[string]reflect.Type{}
	if t.Kind() != reflect.Struct {
		return out
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue // yaml.v3 skips unexported fields, but not embedded ones
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k, v := range Fields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// typeWords maps the names yaml.v3 prints for the Go types reachable from t
// ("config.Proxy", "access.Values", "[]string") to how a YAML author would
// say them, so named types read as what they hold.
func typeWords(t reflect.Type) map[string]string {
	out := map[string]string{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		if t == nil {
			return
		}
		if _, seen := out[t.String()]; seen {
			return
		}
		out[t.String()] = kindWord(t)
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array:
			walk(t.Elem())
		case reflect.Map:
			walk(t.Key())
			walk(t.Elem())
		case reflect.Struct:
			for i := 0; i < t.NumField(); i++ {
				walk(t.Field(i).Type)
			}
		}
	}
	walk(t)
	return out
}

func kindWord(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

// typeWord says the Go type yaml.v3 named the way a YAML author thinks of it,
// by the types reachable from the decoded value, else by the name's shape.
func typeWord(t string, words map[string]string) string {
	if w, ok := words[t]; ok {
		return w
	}
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["), strings.Contains(t, "."):
		return "a mapping"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool", t == "*bool":
		return "a boolean (true or false)"
	}
	return "a " + t
}
