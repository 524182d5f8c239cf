package redact

// Postgres masks the passwords of a PostgreSQL statement: the literal that
// follows the keyword PASSWORD (CREATE/ALTER ROLE|USER|GROUP ... [ENCRYPTED]
// PASSWORD '...', including the md5 and SCRAM-SHA-256 hashes psql's
// \password sends, and OPTIONS (password '...') of user mappings and
// servers). PASSWORD $n records n in Found.Params.
func Postgres(q string) (string, Found) {
	if !containsFold(q, "password", 'w') {
		return q, Found{}
	}
	return afterKeywords(q, lexPostgres, false, "password")
}

// lexPostgres returns the next PostgreSQL token: -- and nested /* */
// comments, single-quoted strings with doubled quotes, E-strings with
// backslash escapes, the B X N U& prefixes, $tag$ dollar quoting, $n
// parameters and double-quoted identifiers.
func lexPostgres(s *scanner) token { return s.standard(postgresToken) }

// postgresToken lexes a token that does not start as standard SQL, at st.
func postgresToken(s *scanner, st int, c byte) token {
	q := s.q
	switch {
	case c == '$':
		if st+1 < len(q) && isDigit(q[st+1]) {
			s.i++
			n := 0
			for s.i < len(q) && isDigit(q[s.i]) {
				if n < 1<<20 {
					n = n*10 + int(q[s.i]-'0')
				}
				s.i++
			}
			return token{k: tParam, s: st, e: s.i, n: n}
		}
		if s.dollar() {
			return token{k: tString, s: st, e: s.i}
		}
		s.i++
		return token{k: tPunct, s: st, e: s.i}
	case isDigit(c):
		s.number()
		return token{k: tNumber, s: st, e: s.i}
	case isWordStart(c):
		// String prefixes: E'' (backslash escapes), B'' X'' N'', U&''.
		if st+1 < len(q) && q[st+1] == '\'' {
			switch c | 0x20 {
			case 'e':
				s.i++
				s.quoted('\'', true)
				return token{k: tString, s: st, e: s.i}
			case 'b', 'x', 'n':
				s.i++
				s.quoted('\'', false)
				return token{k: tString, s: st, e: s.i}
			}
		}
		if c|0x20 == 'u' && st+2 < len(q) && q[st+1] == '&' && (q[st+2] == '\'' || q[st+2] == '"') {
			s.i += 2
			quote := q[s.i]
			s.quoted(quote, false)
			if quote == '"' {
				return token{k: tIdent, s: st, e: s.i}
			}
			return token{k: tString, s: st, e: s.i}
		}
		s.word()
		return token{k: tWord, s: st, e: s.i}
	default:
		s.i++
		return token{k: tPunct, s: st, e: s.i}
	}
}

// dollar scans a $tag$...$tag$ string at s.i; false (nothing consumed)
// when the $ does not open one. An unterminated one runs to the end.
func (s *scanner) dollar() bool {
	q, st := s.q, s.i
	j := st + 1
	if j < len(q) && q[j] != '$' {
		if !isWordStart(q[j]) {
			return false
		}
		for j < len(q) && q[j] != '$' {
			if !isWordStart(q[j]) && !isDigit(q[j]) {
				return false
			}
			j++
		}
	}
	if j >= len(q) {
		return false
	}
	tag := q[st : j+1]
	body := q[j+1:]
	for k := 0; k+len(tag) <= len(body); k++ {
		if body[k] == '$' && body[k:k+len(tag)] == tag {
			s.i = j + 1 + k + len(tag)
			return true
		}
	}
	s.i = len(q)
	return true
}
