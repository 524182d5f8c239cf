package redact

import "strings"

// MySQL masks the passwords of a MySQL or MariaDB statement: after
// IDENTIFIED the literal of BY, AS, USING and REPLACE (IDENTIFIED BY '...',
// IDENTIFIED WITH plugin BY|AS '...', IDENTIFIED VIA plugin USING '...'),
// the argument of PASSWORD('...') and OLD_PASSWORD('...'), PASSWORD '...'
// (IDENTIFIED BY PASSWORD 'hash'), the value of SET PASSWORD [FOR u] = '...'
// and of any *_PASSWORD = '...' option (MASTER_PASSWORD, SOURCE_PASSWORD).
// A ? placeholder in such a place records its position in Found.Params.
func MySQL(q string) (string, Found) {
	if !containsFold(q, "password", 'w') && !containsFold(q, "identified", 'f') {
		return q, Found{}
	}
	s := scanner{q: q, lex: lexMySQL}
	var (
		first      = true  // the next word starts a statement
		set        = false // the statement is SET
		setPass    = false // SET PASSWORD: the value follows =
		identified = false // IDENTIFIED seen in this statement
	)
	for t := range s.tokens() {
		switch {
		case s.punct(t, ';'):
			first, set, setPass, identified = true, false, false, false
		case t.k == tWord:
			w := s.text(t)
			wasFirst := first
			first = false
			if wasFirst {
				set = strings.EqualFold(w, "set")
			} else if set {
				set = false
				if strings.EqualFold(w, "password") {
					setPass = true
					continue
				}
			}
			switch {
			case strings.EqualFold(w, "identified"):
				identified = true
			case identified && (strings.EqualFold(w, "by") || strings.EqualFold(w, "as") ||
				strings.EqualFold(w, "using") || strings.EqualFold(w, "replace")):
				s.secret(s.introduced())
			case strings.EqualFold(w, "password") || strings.EqualFold(w, "old_password"):
				u := s.next()
				if s.punct(u, '(') {
					u = s.introduced()
				} else {
					s.unread(u)
					u = s.introduced()
				}
				s.secret(u)
			case len(w) > len("_password") && strings.EqualFold(w[len(w)-len("_password"):], "_password"):
				u := s.next()
				if !s.punct(u, '=') {
					s.unread(u)
				}
				s.secret(s.introduced())
			}
		case setPass && s.punct(t, '='):
			setPass = false
			s.secret(s.introduced())
		}
	}
	return s.result()
}

// introduced returns the next token, skipping a character set introducer
// written apart from its literal (_utf8mb4 '...').
func (s *scanner) introduced() token {
	t := s.next()
	if t.k == tWord && s.q[t.s] == '_' {
		u := s.next()
		if u.k == tString {
			return u
		}
		s.unread(u)
	}
	return t
}

// lexMySQL returns the next MySQL token: #, "-- " and /* */ comments
// (whose /*! and /*M! forms are code), single- and double-quoted strings
// with backslash escapes and doubled quotes, the N X B and _charset string
// prefixes, backquoted identifiers and ? placeholders, numbered from 0.
func lexMySQL(s *scanner) token {
	for {
		if !s.skipSpace() {
			return token{k: tEOF, s: len(s.q), e: len(s.q)}
		}
		q, st := s.q, s.i
		c := q[st]
		switch {
		case c == '#':
			s.skipLine()
			continue
		case c == '-' && st+2 < len(q) && q[st+1] == '-' && (isSpace(q[st+2])):
			s.skipLine()
			continue
		case c == '-' && st+2 == len(q) && q[st+1] == '-':
			s.i = len(q)
			continue
		case c == '/' && st+1 < len(q) && q[st+1] == '*':
			// Executable comments run their content: read it as code.
			if st+2 < len(q) && (q[st+2] == '!' || q[st+2] == '+') {
				s.i = st + 3
				for s.i < len(q) && isDigit(q[s.i]) {
					s.i++
				}
				continue
			}
			if st+3 < len(q) && q[st+2] == 'M' && q[st+3] == '!' {
				s.i = st + 4
				for s.i < len(q) && isDigit(q[s.i]) {
					s.i++
				}
				continue
			}
			s.skipBlock(false)
			continue
		case c == '*' && st+1 < len(q) && q[st+1] == '/':
			s.i += 2 // the end of an executable comment
			continue
		case c == '\'' || c == '"':
			s.quoted(c, true)
			return token{k: tString, s: st, e: s.i}
		case c == '`':
			s.quoted('`', false)
			return token{k: tIdent, s: st, e: s.i}
		case c == '?':
			s.i++
			t := token{k: tParam, s: st, e: s.i, n: s.qmarks}
			s.qmarks++
			return t
		case isDigit(c):
			s.number()
			return token{k: tNumber, s: st, e: s.i}
		case isWordStart(c):
			s.word()
			if s.i < len(q) && q[s.i] == '\'' {
				w := q[st:s.i]
				if w[0] == '_' || len(w) == 1 && strings.ContainsRune("nNxXbB", rune(w[0])) {
					s.quoted('\'', w[0] == '_' || w[0]|0x20 == 'n')
					return token{k: tString, s: st, e: s.i}
				}
			}
			return token{k: tWord, s: st, e: s.i}
		default:
			s.i++
			return token{k: tPunct, s: st, e: s.i}
		}
	}
}
