package access

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
)

// Wildcard matches any value (and, as a label key, any database).
const Wildcard = "*"

// A pattern is written the way users of database access tools expect:
//
//   - any value
//     ^...$      a regular expression, matched against the whole value
//     prod-*     a glob: '*' stands for any run of characters
//     prod       anything else is compared exactly
type matcher struct {
	kind  matchKind
	exact string
	re    *regexp.Regexp
}

type matchKind uint8

const (
	matchExact matchKind = iota
	matchAny
	matchRegexp
)

func (m *matcher) match(s string) bool {
	switch m.kind {
	case matchAny:
		return true
	case matchRegexp:
		return m.re.MatchString(s)
	}
	return m.exact == s
}

// compiled patterns are cached: Decide runs on every connection and roles
// hold few distinct patterns, so a regexp is compiled once per process. The
// cache is bounded so that patterns arriving from traits cannot grow it
// without limit; past the bound a pattern is compiled on every use.
var (
	patternCache sync.Map // string -> *matcher
	cacheSize    int
	cacheMu      sync.Mutex
)

const maxCachedPatterns = 8192

func compileLiteral(p string) (*matcher, error) {
	if m, ok := patternCache.Load(p); ok {
		return m.(*matcher), nil
	}
	m, err := compilePattern(p)
	if err != nil {
		return nil, err
	}
	cacheMu.Lock()
	if cacheSize < maxCachedPatterns {
		if _, loaded := patternCache.LoadOrStore(p, m); !loaded {
			cacheSize++
		}
	}
	cacheMu.Unlock()
	return m, nil
}

func compilePattern(p string) (*matcher, error) {
	switch {
	case p == Wildcard:
		return &matcher{kind: matchAny}, nil
	case strings.HasPrefix(p, "^") && strings.HasSuffix(p, "$"):
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("%q is not a valid regular expression: %v", p, err)
		}
		return &matcher{kind: matchRegexp, re: re}, nil
	case strings.Contains(p, "*"):
		parts := strings.Split(p, "*")
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		re := regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
		return &matcher{kind: matchRegexp, re: re}, nil
	}
	return &matcher{kind: matchExact, exact: p}, nil
}

// matchValue reports whether s matches pattern p. A pattern that does not
// compile matches nothing; callers on the deny side treat that as a match
// (see Decide), so a broken pattern never widens access.
func matchValue(p, s string) (matched, ok bool) {
	m, err := compileLiteral(p)
	if err != nil {
		return false, false
	}
	return m.match(s), true
}
