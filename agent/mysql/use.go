package mysql

import "strings"

// useTargets returns the databases that USE statements in a COM_QUERY text
// switch to, in order: every statement of a multi-statement text counts,
// and so does a USE inside an executable comment (/*! ... */, /*M! ... */),
// which the server runs. Quoted strings, quoted identifiers and ordinary
// comments are skipped as the server's lexer skips them. A USE whose name
// cannot be read is reported with ok=false: the caller refuses what it
// cannot check.
func useTargets(q string) (targets []string, ok bool) {
	l := lexer{s: q}
	for {
		l.skipSpace()
		if l.eof() {
			return targets, true
		}
		if l.keyword("use") {
			l.skipSpace()
			name, good := l.ident()
			if !good {
				return targets, false
			}
			targets = append(targets, name)
		}
		l.skipStatement()
	}
}

// isUse reports quickly whether a query may hold a USE at all, so the
// common statement costs one scan for the three letters.
func isUse(q string) bool {
	for i := 0; i+3 <= len(q); i++ {
		c := q[i] | 0x20
		if c == 'u' && q[i+1]|0x20 == 's' && q[i+2]|0x20 == 'e' {
			return true
		}
	}
	return false
}

type lexer struct {
	s string
	i int
}

func (l *lexer) eof() bool { return l.i >= len(l.s) }

// skipSpace skips white space, comments and the markers of executable
// comments (whose content is code).
func (l *lexer) skipSpace() {
	for l.i < len(l.s) {
		c := l.s[l.i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			l.i++
		case c == '#':
			l.skipLine()
		case c == '-' && strings.HasPrefix(l.s[l.i:], "--") && (l.i+2 == len(l.s) || isSpaceOrCtl(l.s[l.i+2])):
			l.skipLine()
		case c == '/' && strings.HasPrefix(l.s[l.i:], "/*!"):
			l.i += 3
			l.skipDigits()
		case c == '/' && strings.HasPrefix(l.s[l.i:], "/*M!"):
			l.i += 4
			l.skipDigits()
		case c == '/' && strings.HasPrefix(l.s[l.i:], "/*"):
			end := strings.Index(l.s[l.i+2:], "*/")
			if end < 0 {
				l.i = len(l.s)
			} else {
				l.i += 2 + end + 2
			}
		case c == '*' && strings.HasPrefix(l.s[l.i:], "*/"):
			// The end of an executable comment.
			l.i += 2
		default:
			return
		}
	}
}

func isSpaceOrCtl(c byte) bool { return c <= ' ' }

func (l *lexer) skipLine() {
	if j := strings.IndexByte(l.s[l.i:], '\n'); j >= 0 {
		l.i += j + 1
	} else {
		l.i = len(l.s)
	}
}

func (l *lexer) skipDigits() {
	for l.i < len(l.s) && l.s[l.i] >= '0' && l.s[l.i] <= '9' {
		l.i++
	}
}

func isIdentByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '$' || c >= 0x80
}

// keyword consumes kw (case-insensitive) when it is a whole word here.
func (l *lexer) keyword(kw string) bool {
	if len(l.s)-l.i < len(kw) || !strings.EqualFold(l.s[l.i:l.i+len(kw)], kw) {
		return false
	}
	if j := l.i + len(kw); j < len(l.s) && isIdentByte(l.s[j]) {
		return false
	}
	l.i += len(kw)
	return true
}

// ident reads an identifier: `quoted` (with “ for a backtick), "quoted"
// (ANSI_QUOTES), 'quoted' (a syntax error the server refuses, read as a
// name to be safe) or bare.
func (l *lexer) ident() (string, bool) {
	if l.eof() {
		return "", false
	}
	switch q := l.s[l.i]; q {
	case '`', '"', '\'':
		var b strings.Builder
		for j := l.i + 1; j < len(l.s); j++ {
			c := l.s[j]
			if c == '\\' && q != '`' && j+1 < len(l.s) {
				b.WriteByte(l.s[j+1])
				j++
				continue
			}
			if c == q {
				if j+1 < len(l.s) && l.s[j+1] == q {
					b.WriteByte(q)
					j++
					continue
				}
				l.i = j + 1
				return b.String(), b.Len() > 0
			}
			b.WriteByte(c)
		}
		return "", false
	}
	j := l.i
	for j < len(l.s) && isIdentByte(l.s[j]) {
		j++
	}
	if j == l.i {
		return "", false
	}
	name := l.s[l.i:j]
	l.i = j
	return name, true
}

// skipStatement moves past the next ';' that is outside quotes and
// comments.
func (l *lexer) skipStatement() {
	for l.i < len(l.s) {
		c := l.s[l.i]
		switch c {
		case ';':
			l.i++
			return
		case '\'', '"', '`':
			l.skipQuoted(c)
		case '#', '-', '/', '*':
			start := l.i
			l.skipSpace()
			if l.i == start {
				l.i++
			}
		default:
			l.i++
		}
	}
}

func (l *lexer) skipQuoted(q byte) {
	for j := l.i + 1; j < len(l.s); j++ {
		c := l.s[j]
		if c == '\\' && q != '`' {
			j++
			continue
		}
		if c == q {
			if j+1 < len(l.s) && l.s[j+1] == q {
				j++
				continue
			}
			l.i = j + 1
			return
		}
	}
	l.i = len(l.s)
}
