package access

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"gopkg.in/yaml.v3"
)

// Parse reads one or more roles from YAML (documents separated by ---).
// Decoding is strict, as for the configuration: an unknown key, a value of
// the wrong type or an invalid pattern is an error naming the key and its
// line, because a misspelt deny rule silently ignored would grant access.
func Parse(b []byte) ([]Role, error) {
	// Line maps come from a lenient pass over the same bytes, so errors from
	// the strict pass, which only know a line, can name the key.
	var docs []map[int]string
	var lines []map[string]int
	nd := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var n yaml.Node
		if err := nd.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("roles: %w", err)
		}
		k := keysByLine(&n)
		docs = append(docs, k)
		lines = append(lines, linesByKey(k))
	}

	var out []Role
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	for i := 0; ; i++ {
		var r Role
		err := dec.Decode(&r)
		if errors.Is(err, io.EOF) {
			break
		}
		var keys map[int]string
		if i < len(docs) {
			keys = docs[i]
		}
		if err != nil {
			return nil, cleanYAMLError(err, keys)
		}
		if r.Kind == "" && r.Metadata.Name == "" && r.Spec.Allow.empty() && r.Spec.Deny.empty() {
			continue // an empty document, e.g. after a trailing ---
		}
		if err := r.Validate(); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) && i < len(lines) {
				if l, ok := lineOf(lines[i], fe.Path); ok {
					return nil, fmt.Errorf("line %d: %w", l, err)
				}
			}
			return nil, err
		}
		for _, prev := range out {
			if prev.Metadata.Name == r.Metadata.Name {
				return nil, fmt.Errorf("role %s is defined twice", r.Metadata.Name)
			}
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("roles: no role found (want kind: role, metadata: {name: ...}, spec: {...})")
	}
	return out, nil
}

// lineOf finds the line of path, or of its nearest parent that has one.
func lineOf(lines map[string]int, path string) (int, bool) {
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

func linesByKey(keys map[int]string) map[string]int {
	out := make(map[string]int, len(keys))
	for line, k := range keys {
		if l, ok := out[k]; !ok || line < l {
			out[k] = line
		}
	}
	return out
}

// cleanYAMLError rewrites yaml.v3's messages so they name the key.
func cleanYAMLError(err error, keys map[int]string) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("roles: %w", err)
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		var line int
		_, _ = fmt.Sscanf(m, "line %d:", &line)
		key := keys[line]
		switch {
		case strings.Contains(m, " not found in type "):
			m = fmt.Sprintf("line %d: unknown key %q", line, key)
		case strings.Contains(m, "cannot unmarshal"):
			val := m
			if i := strings.Index(m, "cannot unmarshal "); i >= 0 {
				val = m[i+len("cannot unmarshal "):]
			}
			want := ""
			if i := strings.Index(val, " into "); i >= 0 {
				want = val[i+len(" into "):]
				val = val[:i]
			}
			m = fmt.Sprintf("line %d: key %q has the wrong type: %s is not a %s", line, key, val, typeWord(want))
		}
		msgs = append(msgs, m)
	}
	return errors.New(strings.Join(msgs, "; "))
}

// typeWord says a Go type the way a YAML author thinks of it.
func typeWord(t string) string {
	switch {
	case strings.HasPrefix(t, "[]"), t == "access.Values":
		return "list"
	case strings.HasPrefix(t, "map["), strings.HasPrefix(t, "access."):
		return "mapping"
	case t == "bool", t == "*bool":
		return "boolean (true or false)"
	}
	return t
}

// keysByLine maps each line that holds a key (and the line of its value) to
// the dotted path of that key.
func keysByLine(root *yaml.Node) map[int]string {
	out := map[int]string{}
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
				// Inside a flow mapping ({a: b}) the line already names the
				// enclosing key, which is what an error on that line is about.
				if _, taken := out[k.Line]; !taken || n.Style&yaml.FlowStyle == 0 {
					out[k.Line] = p
				}
				if _, taken := out[v.Line]; !taken {
					out[v.Line] = p
				}
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if _, taken := out[c.Line]; !taken {
					out[c.Line] = p
				}
				walk(c, p)
			}
		}
	}
	walk(root, "")
	return out
}
