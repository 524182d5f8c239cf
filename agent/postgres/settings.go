package postgres

import (
	"strings"

	"github.com/tollgate-db/tollgate/agent/redact"
)

// refusedSetting returns the first parameter of list that statement q
// sets or resets: SET [SESSION|LOCAL] name, RESET name, set_config('name',
// ...) and ALTER ROLE|USER|DATABASE|SYSTEM|FUNCTION ... SET|RESET name; ""
// when none. Statements that name no listed parameter cost two scans.
func refusedSetting(q string, list []string) string {
	if !redact.ContainsFold(q, "set", 't') {
		return ""
	}
	named := false
	for _, e := range list {
		e = strings.ToLower(strings.TrimSuffix(e, "*"))
		if e != "" && redact.ContainsFold(q, e, e[len(e)-1]) {
			named = true
			break
		}
	}
	if !named {
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
		case stmt[0].Word("alter"):
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
