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
	return afterKeywords(q, lexSQLServer, true, "password", "old_password", "secret")
}

// lexSQLServer returns the next T-SQL token: -- and nested /* */ comments,
// single-quoted strings with doubled quotes and an N prefix, bracketed and
// double-quoted identifiers,
// @name parameters and variables.
func lexSQLServer(s *scanner) token { return s.standard(sqlserverToken) }

// sqlserverToken lexes a token that does not start as standard SQL, at st.
func sqlserverToken(s *scanner, st int, c byte) token {
	q := s.q
	switch {
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
