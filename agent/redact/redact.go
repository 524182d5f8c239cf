// Package redact finds the secrets a SQL statement carries (passwords of
// CREATE/ALTER ROLE, IDENTIFIED BY, CREATE LOGIN ... PASSWORD = and their
// kin) and returns the statement with those literals masked, for the audit
// event. The statement sent to the database is never changed.
//
// Each dialect has its own small lexer that knows the dialect's quoting and
// comments, so a keyword inside a string or comment is not mistaken for one
// and a secret is masked whole, whatever quotes it contains. Statements
// without a secret keyword return at once, unchanged and unallocated.
package redact

import (
	"iter"
	"slices"
	"strings"
)

// Mask replaces each secret literal.
const Mask = "'***'"

// Found says what a statement's secrets were.
type Found struct {
	// Literals is how many secret literals were masked.
	Literals int
	// Params are the placeholders that bind a secret: PostgreSQL $n
	// numbers (from 1), MySQL ? positions (from 0).
	Params []int
	// Names are the SQL Server @parameters that bind a secret, as written.
	Names []string
	// Secrets are the masked literals as written in the statement, and
	// their contents without the quotes: what a database's error message
	// may quote back (see Mask).
	Secrets []string
}

// Mask replaces every secret of f that occurs in s (an error message that
// quotes the statement) with ***.
func (f Found) Mask(s string) string {
	for _, sec := range f.Secrets {
		if sec != "" && strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, "***")
		}
	}
	return s
}

// Any reports whether the statement held a secret, as a literal or a
// placeholder.
func (f Found) Any() bool { return f.Literals > 0 || len(f.Params) > 0 || len(f.Names) > 0 }

// Param reports whether placeholder n binds a secret.
func (f Found) Param(n int) bool {
	for _, p := range f.Params {
		if p == n {
			return true
		}
	}
	return false
}

// Name reports whether the SQL Server parameter name binds a secret
// (names compare without case, with or without the @).
func (f Found) Name(name string) bool {
	name = strings.TrimPrefix(name, "@")
	for _, n := range f.Names {
		if strings.EqualFold(strings.TrimPrefix(n, "@"), name) {
			return true
		}
	}
	return false
}

type kind uint8

const (
	tEOF    kind = iota
	tWord        // keyword or bare identifier
	tString      // string literal with any prefix (E'', N'', _utf8'', $$...$$)
	tIdent       // quoted identifier
	tNumber      // number, including 0x hex
	tParam       // $n, ? or @name
	tPunct       // any other single byte
)

type token struct {
	k    kind
	s, e int // span in the statement
	n    int // $n number or ? position for tParam
}

// scanner walks one statement's tokens with one token of pushback.
type scanner struct {
	q      string
	i      int
	lex    func(*scanner) token
	back   token
	hasBk  bool
	qmarks int
	spans  [][2]int
	found  Found
}

func (s *scanner) next() token {
	if s.hasBk {
		s.hasBk = false
		return s.back
	}
	return s.lex(s)
}

func (s *scanner) unread(t token) { s.back, s.hasBk = t, true }

func (s *scanner) text(t token) string { return s.q[t.s:t.e] }

func (s *scanner) is(t token, word string) bool {
	return t.k == tWord && strings.EqualFold(s.q[t.s:t.e], word)
}

func (s *scanner) punct(t token, c byte) bool { return t.k == tPunct && s.q[t.s] == c }

// secret takes t as a secret if it is a literal or a placeholder: a
// literal's span (with any adjacent literals the dialect concatenates) is
// masked, a placeholder is recorded. Anything else is pushed back.
func (s *scanner) secret(t token) bool {
	switch t.k {
	case tString, tNumber:
		if t.k == tNumber && !(t.e-t.s > 2 && (s.q[t.s+1] == 'x' || s.q[t.s+1] == 'X')) {
			break
		}
		end := t.e
		s.keep(t)
		for {
			u := s.next()
			if u.k != tString {
				s.unread(u)
				break
			}
			end = u.e
			s.keep(u)
		}
		s.spans = append(s.spans, [2]int{t.s, end})
		s.found.Literals++
		return true
	case tParam:
		if s.q[t.s] == '@' {
			s.found.Names = append(s.found.Names, s.text(t))
		} else {
			s.found.Params = append(s.found.Params, t.n)
		}
		return true
	}
	s.unread(t)
	return false
}

// keep notes a masked literal as written and its content without the
// quotes, for Found.Mask.
func (s *scanner) keep(t token) {
	lit := s.q[t.s:t.e]
	s.found.Secrets = append(s.found.Secrets, lit)
	if i, j := strings.IndexAny(lit, "'\"$"), strings.LastIndexAny(lit, "'\"$"); i >= 0 && j > i+1 {
		s.found.Secrets = append(s.found.Secrets, lit[i+1:j])
	}
}

// result is the statement with its secret spans masked.
func (s *scanner) result() (string, Found) {
	if len(s.spans) == 0 {
		return s.q, s.found
	}
	var b strings.Builder
	b.Grow(len(s.q))
	at := 0
	for _, sp := range s.spans {
		b.WriteString(s.q[at:sp[0]])
		b.WriteString(Mask)
		at = sp[1]
	}
	b.WriteString(s.q[at:])
	return b.String(), s.found
}

// containsFold reports whether q contains the lower-case ASCII word w in
// any case. It looks for w's byte anchor (lower and upper case) with
// IndexByte and compares around each hit, so a statement without the word
// costs two vectorised scans: the hot path of statements without secrets.
func containsFold(q, w string, anchor byte) bool {
	k := strings.IndexByte(w, anchor)
	other := anchor
	if anchor >= 'a' && anchor <= 'z' {
		other = anchor - 'a' + 'A'
	}
	for n, c := range [2]byte{anchor, other} {
		if n == 1 && c == anchor {
			break
		}
		for from := k; from < len(q); {
			i := strings.IndexByte(q[from:], c)
			if i < 0 {
				break
			}
			at := from + i - k
			if at+len(w) > len(q) {
				break
			}
			if equalFoldASCII(q[at:at+len(w)], w) {
				return true
			}
			from += i + 1
		}
	}
	return false
}

// equalFoldASCII compares s with the lower-case ASCII word w.
func equalFoldASCII(s, w string) bool {
	for j := 0; j < len(w); j++ {
		c := s[j]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != w[j] {
			return false
		}
	}
	return true
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isWordStart accepts letters, _ and every non-ASCII byte (identifiers
// may be any letter in UTF-8).
func isWordStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isWordByte(c byte) bool { return isWordStart(c) || isDigit(c) || c == '$' }

// skipSpace skips blanks; false at the end.
func (s *scanner) skipSpace() bool {
	for s.i < len(s.q) && isSpace(s.q[s.i]) {
		s.i++
	}
	return s.i < len(s.q)
}

// skipBlock skips a /* */ comment starting at s.i, nested when nested.
// An unterminated comment runs to the end.
func (s *scanner) skipBlock(nested bool) {
	depth := 0
	for s.i < len(s.q) {
		switch {
		case s.i+1 < len(s.q) && s.q[s.i] == '/' && s.q[s.i+1] == '*':
			if depth == 0 || nested {
				depth++
			}
			s.i += 2
		case s.i+1 < len(s.q) && s.q[s.i] == '*' && s.q[s.i+1] == '/':
			depth--
			s.i += 2
			if depth == 0 {
				return
			}
		default:
			s.i++
		}
	}
}

// skipLine skips to the end of the line.
func (s *scanner) skipLine() {
	for s.i < len(s.q) && s.q[s.i] != '\n' {
		s.i++
	}
}

// quoted scans a literal opened by quote at s.i: a doubled quote stands for
// itself, and a backslash escapes the next byte when backslash is set. An
// unterminated literal runs to the end.
func (s *scanner) quoted(quote byte, backslash bool) {
	s.i++
	for s.i < len(s.q) {
		c := s.q[s.i]
		switch {
		case backslash && c == '\\':
			s.i += 2
		case c == quote:
			if s.i+1 < len(s.q) && s.q[s.i+1] == quote {
				s.i += 2
				continue
			}
			s.i++
			return
		default:
			s.i++
		}
	}
	s.i = len(s.q)
}

// word scans identifier bytes from s.i.
func (s *scanner) word() {
	for s.i < len(s.q) && isWordByte(s.q[s.i]) {
		s.i++
	}
}

// number scans digits, a fraction, an exponent or a 0x/0b prefix.
func (s *scanner) number() {
	for s.i < len(s.q) && (isWordByte(s.q[s.i]) || s.q[s.i] == '.') {
		s.i++
	}
}

// tokens yields the statement's tokens up to its end, pushback included.
func (s *scanner) tokens() iter.Seq[token] {
	return func(yield func(token) bool) {
		for {
			t := s.next()
			if t.k == tEOF || !yield(t) {
				return
			}
		}
	}
}

// afterKeywords masks the literal (or records the placeholder) that follows
// any of the keywords words in q, read by lex; with eq, an = may stand
// between them. PostgreSQL and T-SQL name their secrets this way.
func afterKeywords(q string, lex func(*scanner) token, eq bool, words ...string) (string, Found) {
	s := scanner{q: q, lex: lex}
	for t := range s.tokens() {
		if !slices.ContainsFunc(words, func(w string) bool { return s.is(t, w) }) {
			continue
		}
		if eq {
			if u := s.next(); !s.punct(u, '=') {
				s.unread(u)
			}
		}
		s.secret(s.next())
	}
	return s.result()
}

// standard lexes what PostgreSQL and T-SQL write alike: it skips blanks,
// -- comments and nested /* */ comments, and returns the end, a
// single-quoted string or a double-quoted identifier (doubled quotes
// standing for themselves). Anything else is the dialect's: rest lexes the
// token that starts at st with c.
func (s *scanner) standard(rest func(s *scanner, st int, c byte) token) token {
	for {
		if !s.skipSpace() {
			return token{k: tEOF, s: len(s.q), e: len(s.q)}
		}
		q, st := s.q, s.i
		switch c := q[st]; {
		case c == '-' && st+1 < len(q) && q[st+1] == '-':
			s.skipLine()
		case c == '/' && st+1 < len(q) && q[st+1] == '*':
			s.skipBlock(true)
		case c == '\'':
			s.quoted('\'', false)
			return token{k: tString, s: st, e: s.i}
		case c == '"':
			s.quoted('"', false)
			return token{k: tIdent, s: st, e: s.i}
		default:
			return rest(s, st, c)
		}
	}
}
