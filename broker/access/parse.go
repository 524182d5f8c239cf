package access

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-db/tollgate/config/strictyaml"
)

// Parse reads one or more roles from YAML (documents separated by ---).
// Decoding is strict, as for the configuration: an unknown key, a value of
// the wrong type or an invalid pattern is an error naming the key and its
// line, because a misspelt deny rule silently ignored would grant access.
func Parse(b []byte) ([]Role, error) {
	// Line maps come from a lenient pass over the same bytes, so errors from
	// the strict pass, which only know a line, can name the key.
	var docs []*yaml.Node
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
		docs = append(docs, &n)
		lines = append(lines, strictyaml.LinesByKey(strictyaml.KeysByLine(&n)))
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
		if err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, fmt.Errorf("roles: %w", err)
			}
			var doc *yaml.Node
			if i < len(docs) {
				doc = docs[i]
			}
			return nil, strictyaml.Reword(err, doc, &r)
		}
		if r.Kind == "" && r.Metadata.Name == "" && r.Spec.Allow.empty() && r.Spec.Deny.empty() {
			continue // an empty document, e.g. after a trailing ---
		}
		if err := r.Validate(); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) && i < len(lines) {
				if l, ok := strictyaml.LineOf(lines[i], fe.Path); ok {
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
