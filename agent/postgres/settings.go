package postgres

import (
	"strings"

	"github.com/tollgate-db/tollgate/agent/redact"
)

// refusedSetting returns the first parameter of list that statement q
// sets or resets: SET [SESSION|LOCAL] name, RESET name, set_config('name',
// ...), ALTER ROLE|USER|DATABASE|SYSTEM|FUNCTION ... SET|RESET name and
// CREATE FUNCTION ... SET name; "" when none.
func refusedSetting(q string, list []string) string {
	if !maySet(q) {
		return ""
	}
	var stmt []redact.Token
	check := func() string {
		defer func() { stmt = stmt[:0] }()
		for i := 0; i+2 < len(stmt); i++ {
			if stmt[i].Word("set_config") && stmt[i+1].Punct('(') {
				if v, ok := stmt[i+2].Literal(); ok && parameterListed(strings.ToLower(v), list) {
					return strings.ToLower(v)
				}
			}
		}
		if len(stmt) < 2 {
			return ""
		}
		switch {
		case stmt[0].Word("set") || stmt[0].Word("reset"):
			j := 1
			if stmt[j].Word("session") || stmt[j].Word("local") {
				j++
			}
			if n := dottedName(stmt, j); parameterListed(n, list) {
				return n
			}
		case stmt[0].Word("alter") || stmt[0].Word("create"):
			for j := 1; j < len(stmt); j++ {
				if stmt[j].Word("set") || stmt[j].Word("reset") {
					if n := dottedName(stmt, j+1); parameterListed(n, list) {
						return n
					}
				}
			}
		}
		return ""
	}
	for t := range redact.PostgresTokens(q) {
		if t.Punct(';') {
			if n := check(); n != "" {
				return n
			}
			continue
		}
		stmt = append(stmt, t)
	}
	return check()
}

// dottedName reads a parameter name at ts[j]: a word or quoted identifier,
// with .part suffixes (pgaudit.log), folded to lower case.
func dottedName(ts []redact.Token, j int) string {
	if j >= len(ts) {
		return ""
	}
	n := ts[j].Name()
	for j+2 < len(ts) && ts[j+1].Punct('.') && ts[j+2].Name() != "" {
		n += "." + ts[j+2].Name()
		j += 2
	}
	return strings.ToLower(n)
}

// maySet is the hot path's pre-check: whether q calls set_config or has a
// statement that begins with SET, RESET, ALTER, CREATE or a comment (a
// statement starts the text or follows a semicolon; one inside a literal
// only costs the full check). Everything else costs two byte scans.
func maySet(q string) bool {
	if redact.ContainsFold(q, "set_config", '_') {
		return true
	}
	for at := 0; ; {
		if firstWordMaySet(q[at:]) {
			return true
		}
		i := strings.IndexByte(q[at:], ';')
		if i < 0 {
			return false
		}
		at += i + 1
	}
}

func firstWordMaySet(s string) bool {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' || s[i] == '(') {
		i++
	}
	if i == len(s) {
		return false
	}
	if s[i] == '/' || s[i] == '-' {
		return true
	}
	j := i
	for j < len(s) && (s[j]|0x20 >= 'a' && s[j]|0x20 <= 'z') {
		j++
	}
	w := s[i:j]
	return strings.EqualFold(w, "set") || strings.EqualFold(w, "reset") ||
		strings.EqualFold(w, "alter") || strings.EqualFold(w, "create")
}
