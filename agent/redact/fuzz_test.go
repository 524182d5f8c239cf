package redact

import (
	"strings"
	"testing"
)

// Statements that carry a secret; %s is the secret, already quoted for its
// literal by the template's quote function.
var secretTemplates = []struct {
	f     func(string) (string, Found)
	stmt  string
	quote func(string) string
}{
	{Postgres, "CREATE ROLE bob LOGIN PASSWORD %s", pgQuote},
	{Postgres, "ALTER USER bob WITH ENCRYPTED PASSWORD %s VALID UNTIL 'infinity'", pgQuote},
	{Postgres, "alter role bob password E%s", backslashQuote},
	{Postgres, "ALTER ROLE bob PASSWORD $pw$%s$pw$", func(s string) string { return strings.ReplaceAll(s, "$pw$", "") }},
	{MySQL, "CREATE USER 'bob'@'%%' IDENTIFIED BY %s", backslashQuote},
	{MySQL, "ALTER USER bob IDENTIFIED WITH mysql_native_password BY %s", backslashQuote},
	{MySQL, "CREATE USER bob IDENTIFIED VIA ed25519 USING PASSWORD(%s)", backslashQuote},
	{MySQL, "SET PASSWORD FOR bob = %s", backslashQuote},
	{SQLServer, "CREATE LOGIN bob WITH PASSWORD = %s, CHECK_POLICY = OFF", pgQuote},
	{SQLServer, "ALTER LOGIN bob WITH PASSWORD = N%s OLD_PASSWORD = N%[1]s", pgQuote},
}

func pgQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func backslashQuote(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}

func FuzzRedact(f *testing.F) {
	for _, seed := range []string{"S3cretPW!", "it's", `a\b`, "$pw$", "*/", "--", "'; select 1; '", "SCRAM-SHA-256$4096:c2FsdA==$k:s"} {
		for i := range secretTemplates {
			f.Add(uint8(i), seed, "select 1; ")
		}
	}
	f.Add(uint8(0), "x", "ALTER ROLE x PASSWORD $$unterminated")
	f.Add(uint8(4), "x", "/*!80000 CREATE USER b IDENTIFIED BY 'p'")
	f.Add(uint8(8), "x", "CREATE LOGIN [b]]] WITH PASSWORD = N'p")
	f.Fuzz(func(t *testing.T, which uint8, secret, lead string) {
		tm := secretTemplates[int(which)%len(secretTemplates)]
		// Any input: no panic, and masking twice changes nothing more.
		for _, fn := range []func(string) (string, Found){Postgres, MySQL, SQLServer} {
			out, _ := fn(lead)
			if again, _ := fn(out); again != out {
				t.Fatalf("not stable: %q -> %q -> %q", lead, out, again)
			}
		}
		// A secret in its place never survives.
		if len(secret) < 3 || strings.ContainsAny(secret, "\x00") {
			return
		}
		quoted := tm.quote(secret)
		q := strings.ReplaceAll(tm.stmt, "%[1]s", "%s")
		if strings.Contains(tm.stmt, "$pw$") && strings.Contains(quoted, "$pw") {
			return
		}
		q = strings.ReplaceAll(strings.ReplaceAll(q, "%s", quoted), "%%", "%")
		// Each literal, with its prefix, becomes the mask.
		want := tm.stmt
		for _, lit := range []string{"$pw$%s$pw$", "E%s", "N%[1]s", "N%s", "%s"} {
			want = strings.ReplaceAll(want, lit, Mask)
		}
		want = "select 1; " + strings.ReplaceAll(want, "%%", "%")
		out, found := tm.f("select 1; " + q)
		if out != want {
			t.Fatalf("%q\n got %q\nwant %q", q, out, want)
		}
		if !found.Any() {
			t.Fatalf("no secret found in %q", q)
		}
	})
}
