package state

import (
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
)

// Users returns every user, sorted by name.
func (p *Projection) Users() []User {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]User, 0, len(p.users))
	for _, u := range p.users {
		out = append(out, u.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// User returns one user.
func (p *Projection) User(name string) (User, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	u, ok := p.users[name]
	return u.clone(), ok
}

// Roles returns the built-in roles and every stored role, sorted by name.
func (p *Projection) Roles() []access.Role {
	p.mu.RLock()
	out := make([]access.Role, 0, len(p.roles)+4)
	for _, r := range p.roles {
		out = append(out, cloneRole(r))
	}
	p.mu.RUnlock()
	out = append(out, access.Builtin()...)
	sort.Slice(out, func(i, j int) bool { return out[i].Metadata.Name < out[j].Metadata.Name })
	return out
}

// Role returns a stored or built-in role.
func (p *Projection) Role(name string) (access.Role, bool) {
	if r, ok := access.BuiltinRole(name); ok {
		return r, true
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	r, ok := p.roles[name]
	if !ok {
		return access.Role{}, false
	}
	return cloneRole(r), true
}

// ResolveRoles returns the roles named, in order, and the names that name
// no role (a role deleted after a certificate was issued grants nothing).
func (p *Projection) ResolveRoles(names []string) (roles []access.Role, missing []string) {
	for _, n := range names {
		if r, ok := p.Role(n); ok {
			roles = append(roles, r)
		} else {
			missing = append(missing, n)
		}
	}
	return roles, missing
}

// Tokens returns every join token, sorted by creation time.
func (p *Projection) Tokens() []Token {
	p.mu.RLock()
	out := slices.Collect(maps.Values(p.tokens))
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Token returns one join token by id (TokenID of its value).
func (p *Projection) Token(id string) (Token, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	t, ok := p.tokens[id]
	return t, ok
}

// Databases returns every registered database, live or expired, sorted by
// name.
func (p *Projection) Databases() []Database {
	p.mu.RLock()
	out := make([]Database, 0, len(p.dbs))
	for _, d := range p.dbs {
		out = append(out, p.withBeat(d))
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LiveDatabases returns the databases whose heartbeats have not stopped at
// now.
func (p *Projection) LiveDatabases(now time.Time) []Database {
	all := p.Databases()
	out := all[:0]
	for _, d := range all {
		if !d.Expired(now) {
			out = append(out, d)
		}
	}
	return out
}

// Database returns one database, live or expired.
func (p *Projection) Database(name string) (Database, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	d, ok := p.dbs[name]
	if !ok {
		return Database{}, false
	}
	return p.withBeat(d), true
}

// CAs returns the published CA certificates, sorted by type.
func (p *Projection) CAs() []CA {
	p.mu.RLock()
	out := make([]CA, 0, len(p.cas))
	for _, c := range p.cas {
		out = append(out, c.clone())
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// CA returns the published certificates of one authority (user, host, db,
// db-client).
func (p *Projection) CA(typ string) (CA, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	c, ok := p.cas[typ]
	return c.clone(), ok
}

// AccessRequests returns every access request, oldest first.
func (p *Projection) AccessRequests() []AccessRequest {
	p.mu.RLock()
	out := make([]AccessRequest, 0, len(p.requests))
	for _, r := range p.requests {
		out = append(out, r.clone())
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// AccessRequest returns one access request.
func (p *Projection) AccessRequest(id string) (AccessRequest, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	r, ok := p.requests[id]
	return r.clone(), ok
}

// Locks returns every lock, expired or not, oldest first.
func (p *Projection) Locks() []Lock {
	p.mu.RLock()
	out := slices.Collect(maps.Values(p.locks))
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Lock returns one lock.
func (p *Projection) Lock(id string) (Lock, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	l, ok := p.locks[id]
	return l, ok
}

// LockedOut returns the first lock in force at now that stops a session of
// user holding roles with session id sid ("" for a new session).
func (p *Projection) LockedOut(now time.Time, user string, roles []string, sid string) (Lock, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, l := range p.locks {
		if l.Matches(now, user, roles, sid) {
			return l, true
		}
	}
	return Lock{}, false
}

// Snapshot copies the whole projection.
func (p *Projection) Snapshot() Snapshot {
	p.mu.RLock()
	defer p.mu.RUnlock()
	s := Snapshot{
		Seq:            p.seq,
		Users:          make(map[string]User, len(p.users)),
		Roles:          make(map[string]access.Role, len(p.roles)),
		Tokens:         maps.Clone(p.tokens),
		Databases:      make(map[string]Database, len(p.dbs)),
		CAs:            make(map[string]CA, len(p.cas)),
		AccessRequests: make(map[string]AccessRequest, len(p.requests)),
		Locks:          maps.Clone(p.locks),
	}
	for k, v := range p.users {
		s.Users[k] = v.clone()
	}
	for k, v := range p.roles {
		s.Roles[k] = cloneRole(v)
	}
	for k, v := range p.dbs {
		s.Databases[k] = p.withBeat(v)
	}
	for k, v := range p.cas {
		s.CAs[k] = v.clone()
	}
	for k, v := range p.requests {
		s.AccessRequests[k] = v.clone()
	}
	return s
}
