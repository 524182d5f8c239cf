package redact

import (
	"iter"
	"strings"
)

// Token is one token of a PostgreSQL statement as this package's lexer
// reads it, for other checks that must respect quoting and comments the
// same way (comments are skipped).
type Token struct {
	kind kind
	text string
}

// Word reports whether the token is the bare word w, in any case.
func (t Token) Word(w string) bool { return t.kind == tWord && strings.EqualFold(t.text, w) }

// Punct reports whether the token is the single byte c.
func (t Token) Punct(c byte) bool { return t.kind == tPunct && t.text[0] == c }

// Name is the token as an identifier: a bare word folded to lower case, a
// double-quoted identifier unquoted; "" for anything else.
func (t Token) Name() string {
	switch t.kind {
	case tWord:
		return strings.ToLower(t.text)
	case tIdent:
		if len(t.text) >= 2 && t.text[0] == '"' && t.text[len(t.text)-1] == '"' {
			return strings.ReplaceAll(t.text[1:len(t.text)-1], `""`, `"`)
		}
	}
	return ""
}

// Literal is the value of a plain single-quoted string (doubled quotes
// undone); ok is false for any other token.
func (t Token) Literal() (s string, ok bool) {
	if t.kind != tString || len(t.text) < 2 || t.text[0] != '\'' || t.text[len(t.text)-1] != '\'' {
		return "", false
	}
	return strings.ReplaceAll(t.text[1:len(t.text)-1], "''", "'"), true
}

// PostgresTokens yields the tokens of a PostgreSQL statement.
func PostgresTokens(q string) iter.Seq[Token] {
	return func(yield func(Token) bool) {
		s := scanner{q: q, lex: lexPostgres}
		for t := range s.tokens() {
			if !yield(Token{kind: t.k, text: q[t.s:t.e]}) {
				return
			}
		}
	}
}

// ContainsFold reports whether q holds the lower-case ASCII word w in any
// case (a fast pre-check; anchor is a byte of w, best a rare one).
func ContainsFold(q, w string, anchor byte) bool { return containsFold(q, w, anchor) }
