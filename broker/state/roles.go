package state

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/events"
)

// UpsertRole stores a role, creating it (role.create) or replacing it
// (role.update); nothing is written when the stored role is the same.
// Built-in roles cannot be replaced.
func (s *Store) UpsertRole(ctx context.Context, by Actor, r access.Role) (created bool, err error) {
	if err := r.Validate(); err != nil {
		return false, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	name := r.Metadata.Name
	if access.IsBuiltin(name) {
		return false, invalid("role %s is built in and cannot be replaced", name)
	}
	r = cloneRole(r)
	ev, err := s.change(ctx, by, subject(AggRole, name), func() (events.Event, error) {
		cur, ok := s.roles[name]
		switch {
		case !ok:
			return &events.RoleCreate{Name: name, Role: r}, nil
		case reflect.DeepEqual(cur, r):
			return nil, nil
		}
		return &events.RoleUpdate{Name: name, Role: r}, nil
	})
	if err != nil {
		return false, err
	}
	_, created = ev.(*events.RoleCreate)
	return created, nil
}

// DeleteRole removes a role that no user holds.
func (s *Store) DeleteRole(ctx context.Context, by Actor, name string) error {
	if access.IsBuiltin(name) {
		return invalid("role %s is built in and cannot be deleted", name)
	}
	_, err := s.change(ctx, by, subject(AggRole, name), func() (events.Event, error) {
		if _, ok := s.roles[name]; !ok {
			return nil, fmt.Errorf("role %s: %w", name, ErrNotFound)
		}
		var holders []string
		for _, u := range s.users {
			for _, rn := range u.Roles {
				if rn == name {
					holders = append(holders, u.Name)
				}
			}
		}
		if len(holders) > 0 {
			sort.Strings(holders)
			return nil, fmt.Errorf("role %s: %w by users %s", name, ErrInUse, strings.Join(holders, ", "))
		}
		return &events.RoleDelete{Name: name}, nil
	})
	return err
}
