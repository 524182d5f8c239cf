package redact

// SQLServer masks the passwords and secrets of a T-SQL batch: the value of
// PASSWORD = '...' and OLD_PASSWORD = '...' (CREATE/ALTER LOGIN, contained
// users, application roles, ENCRYPTION BY PASSWORD of keys and
// certificates), including N'...' and 0x... HASHED values, and of
// SECRET = '...' (CREATE/ALTER CREDENTIAL). A batch has no reliable
// statement boundary, so the rule holds anywhere in it; @name in such a
// place records the name in Found.Names.
func SQLServer(q string) (string, Found) {
	if !containsFold(q, "password", 'w') && !containsFold(q, "secret", 'r') {
		return q, Found{}
	}
	s := scanner{q: q, lex: lexSQLServer}
	for {
		t := s.next()
		if t.k == tEOF {
			return s.result()
		}
		if s.is(t, "password") || s.is(t, "old_password") || s.is(t, "secret") {
			u := s.next()
			if !s.punct(u, '=') {
				s.unread(u)
			}
			s.secret(s.next())
		}
	}
}

// lexSQLServer returns the next T-SQL token: -- and nested /* */ comments,
// single-quoted strings with doubled quotes and an N prefix, bracketed and
// double-quoted identifiers,
// @name parameters and variables.
func lexSQLServer(s *scanner) token {
	for {
		if !s.skipSpace() {
			return token{k: tEOF, s: len(s.q), e: len(s.q)}
		}
		q, st := s.q, s.i
		c := q[st]
		switch {
		case c == '-' && st+1 < len(q) && q[st+1] == '-':
			s.skipLine()
			continue
		case c == '/' && st+1 < len(q) && q[st+1] == '*':
			s.skipBlock(true)
			continue
		case c == '\'':
			s.quoted('\'', false)
			return token{k: tString, s: st, e: s.i}
		case c == '"':
			s.quoted('"', false)
			return token{k: tIdent, s: st, e: s.i}
		case c == '[':
			s.quoted(']', false)
			return token{k: tIdent, s: st, e: s.i}
		case c == '@':
			s.i++
			for s.i < len(q) && (isWordByte(q[s.i]) || q[s.i] == '@' || q[s.i] == '#') {
				s.i++
			}
			return token{k: tParam, s: st, e: s.i}
		case isDigit(c):
			s.number()
			return token{k: tNumber, s: st, e: s.i}
		case isWordStart(c) || c == '#':
			if (c == 'N' || c == 'n') && st+1 < len(q) && q[st+1] == '\'' {
				s.i++
				s.quoted('\'', false)
				return token{k: tString, s: st, e: s.i}
			}
			s.i++
			for s.i < len(q) && (isWordByte(q[s.i]) || q[s.i] == '@' || q[s.i] == '#') {
				s.i++
			}
			return token{k: tWord, s: st, e: s.i}
		default:
			s.i++
			return token{k: tPunct, s: st, e: s.i}
		}
	}
}
