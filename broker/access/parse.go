package access

import (
	"errors"
	"fmt"

	"github.com/tollgate-db/tollgate/config/strictyaml"
)

// Parse reads one or more roles from YAML (documents separated by ---).
// Decoding is strict, as for the configuration: an unknown key, a value of
// the wrong type or an invalid pattern is an error naming the key and its
// line, because a misspelt deny rule silently ignored would grant access.
func Parse(b []byte) ([]Role, error) {
	roles, docs, err := strictyaml.Documents[Role](b, "roles")
	if err != nil {
		return nil, err
	}
	var out []Role
	for i, r := range roles {
		if r.Kind == "" && r.Metadata.Name == "" && r.Spec.Allow.empty() && r.Spec.Deny.empty() {
			continue // an empty document, e.g. after a trailing ---
		}
		if err := r.Validate(); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) && i < len(docs) {
				if l, ok := strictyaml.LineOf(strictyaml.LinesByKey(strictyaml.KeysByLine(docs[i])), fe.Path); ok {
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
