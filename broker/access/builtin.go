package access

// Names of the built-in roles.
const (
	// RoleAccess reaches every database as the db_users and db_names the
	// user's own traits list (tollgate users add --db-users --db-names).
	RoleAccess = "access"
	// RoleRequester may request the access role.
	RoleRequester = "requester"
	// RoleReviewer may review access requests for any role.
	RoleReviewer = "reviewer"
	// RoleEditor grants the admin operations (users, roles, tokens, locks,
	// certificates). Roles have no rules for admin operations, so the
	// broker checks for this role by name; it grants no database access.
	RoleEditor = "editor"
)

// Builtin returns the built-in roles, fresh copies on every call. They exist
// in every cluster without being stored and cannot be replaced or deleted,
// so that `tollgate users add --roles=access` means the same everywhere.
func Builtin() []Role {
	return []Role{
		{
			Kind:     KindRole,
			Metadata: Metadata{Name: RoleAccess, Description: "Every database, as the db_users and db_names of the user's traits"},
			Spec: RoleSpec{Allow: Conditions{
				DBLabels: Labels{Wildcard: Values{Wildcard}},
				DBUsers:  []string{"{{internal.db_users}}"},
				DBNames:  []string{"{{internal.db_names}}"},
			}},
		},
		{
			Kind:     KindRole,
			Metadata: Metadata{Name: RoleRequester, Description: "May request the access role"},
			Spec: RoleSpec{Allow: Conditions{
				Request: &RequestConditions{Roles: []string{RoleAccess}},
			}},
		},
		{
			Kind:     KindRole,
			Metadata: Metadata{Name: RoleReviewer, Description: "May review access requests for any role"},
			Spec: RoleSpec{Allow: Conditions{
				ReviewRequests: &ReviewConditions{Roles: []string{Wildcard}},
			}},
		},
		{
			Kind:     KindRole,
			Metadata: Metadata{Name: RoleEditor, Description: "Administers users, roles, tokens, locks and certificates"},
		},
	}
}

// BuiltinRole returns the built-in role called name.
func BuiltinRole(name string) (Role, bool) {
	for _, r := range Builtin() {
		if r.Metadata.Name == name {
			return r, true
		}
	}
	return Role{}, false
}

// IsBuiltin reports whether name is a built-in role.
func IsBuiltin(name string) bool {
	switch name {
	case RoleAccess, RoleRequester, RoleReviewer, RoleEditor:
		return true
	}
	return false
}
