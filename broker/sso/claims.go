package sso

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/events"
)

// Identity maps a provider's claims (a SAML assertion's attributes) to a
// Tollgate identity with the connector's claims_to_roles (attributes_to_roles): every entry whose claim holds a value
// matching its pattern adds its roles and traits. A login matching no
// entry gets an error that says which claims were seen, so an
// administrator can fix the mapping without reading tokens.
func Identity(c events.Connector, claims map[string]any) (identity.Identity, error) {
	uc := c.UsernameClaim
	if uc == "" {
		uc = DefaultUsernameClaim
		if c.Type == TypeSAML {
			uc = NameIDClaim
		}
	}
	names := claimValues(claims[uc])
	if len(names) != 1 || names[0] == "" {
		return identity.Identity{}, &MappingError{NoUser: true, Claim: uc}
	}
	id := identity.Identity{User: names[0]}
	add := func(trait string, vs []string) {
		for _, v := range vs {
			if id.Traits == nil {
				id.Traits = map[string][]string{}
			}
			if !slices.Contains(id.Traits[trait], v) {
				id.Traits[trait] = append(id.Traits[trait], v)
			}
		}
	}
	for _, m := range c.ClaimsToRoles {
		if !slices.ContainsFunc(claimValues(claims[m.Claim]), func(v string) bool {
			ok, _ := path.Match(m.Value, v)
			return ok
		}) {
			continue
		}
		for _, r := range m.Roles {
			if !slices.Contains(id.Roles, r) {
				id.Roles = append(id.Roles, r)
			}
		}
		add(identity.TraitDBUsers, m.DBUsers)
		add(identity.TraitDBNames, m.DBNames)
	}
	if len(id.Roles) == 0 {
		var names, seen []string
		for _, m := range c.ClaimsToRoles {
			if !slices.Contains(names, m.Claim) {
				names = append(names, m.Claim)
				seen = append(seen, m.Claim+"="+strings.Join(claimValues(claims[m.Claim]), ","))
			}
		}
		sort.Strings(seen)
		return identity.Identity{}, &MappingError{User: id.User, Seen: seen}
	}
	return id, nil
}

// MappingError is a login whose claims name no user or grant no role.
type MappingError struct {
	NoUser bool
	Claim  string
	User   string
	Seen   []string
}

func (e *MappingError) Error() string {
	if e.NoUser {
		return fmt.Sprintf("the identity provider gave no single value for the claim or attribute %q that names the user (username_claim, username_attribute)", e.Claim)
	}
	return fmt.Sprintf("user %s has no role: no claims_to_roles (attributes_to_roles) entry of the connector matches [%s]; ask an administrator to map them",
		e.User, strings.Join(e.Seen, " "))
}

// claimValues turns a claim into strings: a string, a number, a boolean
// or a list of them.
func claimValues(v any) []string {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return []string{x}
	case bool:
		return []string{strconv.FormatBool(x)}
	case float64:
		return []string{strconv.FormatFloat(x, 'f', -1, 64)}
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, claimValues(e)...)
		}
		return out
	case []string:
		return x
	}
	return []string{fmt.Sprint(v)}
}
