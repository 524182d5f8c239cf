package events

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"sync"
)

// Spec describes one registered event type.
type Spec struct {
	// Type is the dotted name, e.g. db.session.query.
	Type string
	// Code is the stable short code, e.g. TGDB002I.
	Code string
	// FailCode, when set, replaces Code on an event whose Status says it
	// failed or was denied (the W or E variant of the same type).
	FailCode string
	// Doc says in one sentence what the event records.
	Doc string
	// New returns a zero value of the event's Go type.
	New    func() Event
	goType reflect.Type
}

var (
	registryMu sync.RWMutex
	byType     = map[string]*Spec{}
	byGoType   = map[reflect.Type]*Spec{}
	byCode     = map[string]*Spec{}

	typeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`)
	codeRE = regexp.MustCompile(`^TG[A-Z]{2}[0-9]{3}[IWE]$`)
)

// Register adds an event type to the registry. It panics on a malformed or
// duplicate type or code: registration happens in init functions, and a
// clash there is a programming error that must not reach a running system.
func Register[T any, PT interface {
	*T
	Event
}](typ, code, doc string) {
	register[T, PT](typ, code, "", doc)
}

// RegisterOutcome is Register for a type with an outcome: code is used when
// the event's Status succeeded, failCode when it failed or was denied.
func RegisterOutcome[T any, PT interface {
	*T
	Event
}](typ, code, failCode, doc string) {
	if !codeRE.MatchString(failCode) {
		panic(fmt.Sprintf("events: malformed failure code %q for %s", failCode, typ))
	}
	register[T, PT](typ, code, failCode, doc)
}

func register[T any, PT interface {
	*T
	Event
}](typ, code, failCode, doc string) {
	if !typeRE.MatchString(typ) {
		panic(fmt.Sprintf("events: malformed event type %q", typ))
	}
	if !codeRE.MatchString(code) {
		panic(fmt.Sprintf("events: malformed event code %q for %s", code, typ))
	}
	s := &Spec{
		Type:     typ,
		Code:     code,
		FailCode: failCode,
		Doc:      doc,
		New:      func() Event { return PT(new(T)) },
		goType:   reflect.TypeOf((*T)(nil)),
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := byType[typ]; dup {
		panic("events: duplicate event type " + typ)
	}
	if other, dup := byCode[code]; dup {
		panic(fmt.Sprintf("events: code %s used by %s and %s", code, other.Type, typ))
	}
	if other, dup := byCode[failCode]; failCode != "" && dup {
		panic(fmt.Sprintf("events: code %s used by %s and %s", failCode, other.Type, typ))
	}
	if other, dup := byGoType[s.goType]; dup {
		panic(fmt.Sprintf("events: Go type %s registered as %s and %s", s.goType, other.Type, typ))
	}
	byType[typ], byCode[code], byGoType[s.goType] = s, s, s
	if failCode != "" {
		byCode[failCode] = s
	}
}

// Lookup returns the spec of an event type.
func Lookup(typ string) (Spec, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s, ok := byType[typ]
	if !ok {
		return Spec{}, false
	}
	return *s, true
}

// SpecOf returns the spec of the Go type of ev.
func SpecOf(ev Event) (Spec, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s, ok := byGoType[reflect.TypeOf(ev)]
	if !ok {
		return Spec{}, false
	}
	return *s, true
}

// Specs returns every registered event type, sorted by type.
func Specs() []Spec {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]Spec, 0, len(byType))
	for _, s := range byType {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}
