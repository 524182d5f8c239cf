package access

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/tollgate-db/tollgate/broker/identity"
)

// Template namespaces. Internal traits are the ones Tollgate itself keeps
// on a user (db_users, db_names); external traits come from an identity
// provider. Both are read from identity.Identity.Traits.
const (
	NamespaceInternal = "internal"
	NamespaceExternal = "external"
)

// internalTraits are the only traits the internal namespace knows, so a
// typo like {{internal.db_user}} is an error instead of a silent no-match.
var internalTraits = map[string]bool{identity.TraitDBUsers: true, identity.TraitDBNames: true}

var traitNameRE = regexp.MustCompile(`^[A-Za-z0-9_:/@-]+$`)

// template is one value such as "{{internal.db_users}}" or
// "app-{{external.team}}": a trait between a fixed prefix and suffix.
type template struct {
	prefix, namespace, trait, suffix string
}

// parseTemplate parses a value that contains "{{" or "}}".
func parseTemplate(v string) (template, error) {
	open := strings.Index(v, "{{")
	end := strings.Index(v, "}}")
	if open < 0 || end < open {
		return template{}, fmt.Errorf("%q: unbalanced {{ }}", v)
	}
	if strings.Contains(v[end+2:], "{{") || strings.Contains(v[end+2:], "}}") {
		return template{}, fmt.Errorf("%q: only one {{template}} per value", v)
	}
	expr := strings.TrimSpace(v[open+2 : end])
	ns, trait, ok := strings.Cut(expr, ".")
	if !ok || !traitNameRE.MatchString(trait) {
		return template{}, fmt.Errorf("%q: want {{internal.<trait>}} or {{external.<trait>}}", v)
	}
	switch ns {
	case NamespaceInternal:
		if !internalTraits[trait] {
			return template{}, fmt.Errorf("%q: unknown internal trait %q (known: db_users, db_names)", v, trait)
		}
	case NamespaceExternal:
	default:
		return template{}, fmt.Errorf("%q: unknown namespace %q (want internal or external)", v, ns)
	}
	return template{prefix: v[:open], namespace: ns, trait: trait, suffix: v[end+2:]}, nil
}

// expand replaces templates in values by the identity's trait values. A
// template over a missing or empty trait expands to nothing, so it grants
// (or denies) nothing. A value that is not a valid template is kept as a
// pattern that cannot be expanded: on the allow side it then matches
// nothing, on the deny side Decide treats it as matching.
func expand(values []string, traits map[string][]string) (out []string, broken bool) {
	has := false
	for _, v := range values {
		if strings.Contains(v, "{{") || strings.Contains(v, "}}") {
			has = true
			break
		}
	}
	if !has {
		return values, false
	}
	out = make([]string, 0, len(values)+4)
	for _, v := range values {
		if !strings.Contains(v, "{{") && !strings.Contains(v, "}}") {
			out = append(out, v)
			continue
		}
		t, err := parseTemplate(v)
		if err != nil {
			broken = true
			continue
		}
		for _, tv := range traits[t.trait] {
			out = append(out, t.prefix+tv+t.suffix)
		}
	}
	return out, broken
}
