package redact

import (
	"fmt"
	"strings"
	"testing"
)

type tcase struct {
	in, want string
	params   []int
	names    []string
}

func run(t *testing.T, name string, f func(string) (string, Found), cases []tcase) {
	t.Helper()
	for _, c := range cases {
		got, found := f(c.in)
		if got != c.want {
			t.Errorf("%s(%q)\n got %q\nwant %q", name, c.in, got, c.want)
		}
		if fmt.Sprint(found.Params) != fmt.Sprint(c.params) && !(len(found.Params) == 0 && len(c.params) == 0) {
			t.Errorf("%s(%q) params %v, want %v", name, c.in, found.Params, c.params)
		}
		if fmt.Sprint(found.Names) != fmt.Sprint(c.names) && !(len(found.Names) == 0 && len(c.names) == 0) {
			t.Errorf("%s(%q) names %v, want %v", name, c.in, found.Names, c.names)
		}
		if (got != c.in || len(c.params) > 0 || len(c.names) > 0) != found.Any() {
			t.Errorf("%s(%q) Any() = %v", name, c.in, found.Any())
		}
	}
}

func TestPostgres(t *testing.T) {
	run(t, "Postgres", Postgres, []tcase{
		{in: "select 1", want: "select 1"},
		{in: "CREATE ROLE bob LOGIN PASSWORD 'S3cretPW!'", want: "CREATE ROLE bob LOGIN PASSWORD '***'"},
		{in: "create role bob with login password 'S3cretPW!';", want: "create role bob with login password '***';"},
		{in: "ALTER USER bob WITH ENCRYPTED PASSWORD 'it''s' VALID UNTIL 'infinity'", want: "ALTER USER bob WITH ENCRYPTED PASSWORD '***' VALID UNTIL 'infinity'"},
		{in: "ALTER USER x PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$abc:def'", want: "ALTER USER x PASSWORD '***'"},
		{in: "ALTER USER x PASSWORD 'md5a3556571e93b0d20722ba62be61e8c2d'", want: "ALTER USER x PASSWORD '***'"},
		{in: `ALTER ROLE x PASSWORD E'a\'b\\' LOGIN`, want: `ALTER ROLE x PASSWORD '***' LOGIN`},
		{in: "ALTER ROLE x PASSWORD $pw$it's$pw$ LOGIN", want: "ALTER ROLE x PASSWORD '***' LOGIN"},
		{in: "ALTER ROLE x PASSWORD $$a$$", want: "ALTER ROLE x PASSWORD '***'"},
		{in: "ALTER ROLE x PASSWORD U&'d\\0061t' LOGIN", want: "ALTER ROLE x PASSWORD '***' LOGIN"},
		{in: "ALTER ROLE x PASSWORD 'abc'\n'def' LOGIN", want: "ALTER ROLE x PASSWORD '***' LOGIN"},
		{in: "ALTER ROLE x PASSWORD /* c */ 'abc'", want: "ALTER ROLE x PASSWORD /* c */ '***'"},
		{in: "ALTER ROLE x PASSWORD -- c\n 'abc'", want: "ALTER ROLE x PASSWORD -- c\n '***'"},
		{in: "ALTER ROLE x PASSWORD NULL", want: "ALTER ROLE x PASSWORD NULL"},
		{in: "ALTER ROLE x PASSWORD 'unterminated", want: "ALTER ROLE x PASSWORD '***'"},
		{in: "ALTER ROLE x PASSWORD $1", want: "ALTER ROLE x PASSWORD $1", params: []int{1}},
		{in: "CREATE ROLE a PASSWORD 'one'; CREATE ROLE b PASSWORD $2", want: "CREATE ROLE a PASSWORD '***'; CREATE ROLE b PASSWORD $2", params: []int{2}},
		{in: "CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password 'pw')", want: "CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password '***')"},
		// The keyword in a string, a comment or an identifier is not one.
		{in: "select 'password ''x'''", want: "select 'password ''x'''"},
		{in: "select 1 -- password 'x'", want: "select 1 -- password 'x'"},
		{in: "select /* /* nested */ password 'x' */ 1", want: "select /* /* nested */ password 'x' */ 1"},
		{in: `select "password" 'x'`, want: `select "password" 'x'`},
		{in: "select $q$ password 'x' $q$", want: "select $q$ password 'x' $q$"},
		{in: "select * from users where password = 'x'", want: "select * from users where password = 'x'"},
		{in: "select password_hash from t", want: "select password_hash from t"},
	})
}

func TestMySQL(t *testing.T) {
	run(t, "MySQL", MySQL, []tcase{
		{in: "select 1", want: "select 1"},
		{in: "CREATE USER 'bob'@'%' IDENTIFIED BY 'S3cretPW!'", want: "CREATE USER 'bob'@'%' IDENTIFIED BY '***'"},
		{in: `CREATE USER bob IDENTIFIED BY "it\"s"`, want: `CREATE USER bob IDENTIFIED BY '***'`},
		{in: `CREATE USER bob IDENTIFIED BY 'a\'b''c' REQUIRE SSL`, want: `CREATE USER bob IDENTIFIED BY '***' REQUIRE SSL`},
		{in: "ALTER USER bob IDENTIFIED WITH mysql_native_password BY 'pw'", want: "ALTER USER bob IDENTIFIED WITH mysql_native_password BY '***'"},
		{in: "ALTER USER bob IDENTIFIED WITH caching_sha2_password AS '$A$005$hash'", want: "ALTER USER bob IDENTIFIED WITH caching_sha2_password AS '***'"},
		{in: "ALTER USER bob IDENTIFIED BY 'new' REPLACE 'old' RETAIN CURRENT PASSWORD", want: "ALTER USER bob IDENTIFIED BY '***' REPLACE '***' RETAIN CURRENT PASSWORD"},
		{in: "CREATE USER bob IDENTIFIED VIA ed25519 USING PASSWORD('pw') OR unix_socket", want: "CREATE USER bob IDENTIFIED VIA ed25519 USING PASSWORD('***') OR unix_socket"},
		{in: "CREATE USER bob IDENTIFIED VIA mysql_native_password USING '*ABC'", want: "CREATE USER bob IDENTIFIED VIA mysql_native_password USING '***'"},
		{in: "CREATE USER bob IDENTIFIED BY PASSWORD '*ABC'", want: "CREATE USER bob IDENTIFIED BY PASSWORD '***'"},
		{in: "GRANT ALL ON *.* TO bob IDENTIFIED BY _utf8mb4'pw' WITH GRANT OPTION", want: "GRANT ALL ON *.* TO bob IDENTIFIED BY '***' WITH GRANT OPTION"},
		{in: "GRANT ALL ON *.* TO bob IDENTIFIED BY _utf8mb4 'pw'", want: "GRANT ALL ON *.* TO bob IDENTIFIED BY _utf8mb4 '***'"},
		{in: "SET PASSWORD = 'pw'", want: "SET PASSWORD = '***'"},
		{in: "SET PASSWORD FOR 'bob'@'%' = PASSWORD('pw')", want: "SET PASSWORD FOR 'bob'@'%' = PASSWORD('***')"},
		{in: "set password for bob@localhost = 'pw'", want: "set password for bob@localhost = '***'"},
		{in: "SET PASSWORD FOR bob = OLD_PASSWORD('pw')", want: "SET PASSWORD FOR bob = OLD_PASSWORD('***')"},
		{in: "CHANGE MASTER TO MASTER_HOST='h', MASTER_PASSWORD='pw'", want: "CHANGE MASTER TO MASTER_HOST='h', MASTER_PASSWORD='***'"},
		{in: "/*!80000 CREATE USER bob IDENTIFIED BY 'pw' */", want: "/*!80000 CREATE USER bob IDENTIFIED BY '***' */"},
		{in: "CREATE USER bob IDENTIFIED BY ?", want: "CREATE USER bob IDENTIFIED BY ?", params: []int{0}},
		{in: "SELECT ?, ?; SET PASSWORD FOR ? = ?", want: "SELECT ?, ?; SET PASSWORD FOR ? = ?", params: []int{3}},
		{in: "select 'identified by ''x'''", want: "select 'identified by ''x'''"},
		{in: "select 1 # identified by 'x'", want: "select 1 # identified by 'x'"},
		{in: "select 1 -- identified by 'x'", want: "select 1 -- identified by 'x'"},
		{in: "select 1 /* identified by 'x' */", want: "select 1 /* identified by 'x' */"},
		{in: "select `password` from t where a = 'identified' order by 1", want: "select `password` from t where a = 'identified' order by 1"},
		{in: "select * from users where password = 'x'", want: "select * from users where password = 'x'"},
	})
}

func TestSQLServer(t *testing.T) {
	run(t, "SQLServer", SQLServer, []tcase{
		{in: "select 1", want: "select 1"},
		{in: "CREATE LOGIN bob WITH PASSWORD = 'S3cretPW!'", want: "CREATE LOGIN bob WITH PASSWORD = '***'"},
		{in: "CREATE LOGIN [bob] WITH PASSWORD = N'it''s' MUST_CHANGE, CHECK_POLICY = ON", want: "CREATE LOGIN [bob] WITH PASSWORD = '***' MUST_CHANGE, CHECK_POLICY = ON"},
		{in: "ALTER LOGIN bob WITH PASSWORD = 'new' OLD_PASSWORD = 'old'", want: "ALTER LOGIN bob WITH PASSWORD = '***' OLD_PASSWORD = '***'"},
		{in: "CREATE LOGIN bob WITH PASSWORD = 0x0200ABCD HASHED", want: "CREATE LOGIN bob WITH PASSWORD = '***' HASHED"},
		{in: "CREATE CREDENTIAL c WITH IDENTITY = 'id', SECRET = 'key'", want: "CREATE CREDENTIAL c WITH IDENTITY = 'id', SECRET = '***'"},
		{in: "CREATE MASTER KEY ENCRYPTION BY PASSWORD = 'pw'", want: "CREATE MASTER KEY ENCRYPTION BY PASSWORD = '***'"},
		{in: "ALTER LOGIN bob WITH PASSWORD = @pw", want: "ALTER LOGIN bob WITH PASSWORD = @pw", names: []string{"@pw"}},
		{in: "select 'password = ''x'''", want: "select 'password = ''x'''"},
		{in: "select 1 -- password = 'x'", want: "select 1 -- password = 'x'"},
		{in: "select [password] = 'x'", want: "select [password] = 'x'"},
	})
}

func TestFound(t *testing.T) {
	_, f := SQLServer("ALTER LOGIN bob WITH PASSWORD = @PW")
	if !f.Name("pw") || !f.Name("@Pw") || f.Name("other") {
		t.Fatalf("names %v", f.Names)
	}
	_, f = Postgres("ALTER ROLE x PASSWORD $3")
	if !f.Param(3) || f.Param(1) {
		t.Fatalf("params %v", f.Params)
	}
}

// A statement without a secret keyword costs a scan and no allocation.
func TestNoSecretAllocatesNothing(t *testing.T) {
	q := strings.Repeat("select a, b from t where c = 'x' and d = $1; ", 4)
	for name, f := range map[string]func(string) (string, Found){"pg": Postgres, "mysql": MySQL, "sqlserver": SQLServer} {
		if n := testing.AllocsPerRun(100, func() { f(q) }); n != 0 {
			t.Errorf("%s: %v allocations", name, n)
		}
	}
}

var sink string

func BenchmarkRedact(b *testing.B) {
	plain := "SELECT abalance FROM pgbench_accounts WHERE aid = $1 AND bid IN (SELECT bid FROM pgbench_branches WHERE bbalance > 0)"
	cases := []struct {
		name string
		f    func(string) (string, Found)
		q    string
	}{
		{"postgres/plain", Postgres, plain},
		{"postgres/secret", Postgres, "ALTER ROLE bob WITH LOGIN PASSWORD 'S3cretPW!' VALID UNTIL 'infinity'"},
		{"mysql/plain", MySQL, strings.ReplaceAll(plain, "$1", "?")},
		{"mysql/secret", MySQL, "CREATE USER 'bob'@'%' IDENTIFIED WITH mysql_native_password BY 'S3cretPW!'"},
		{"sqlserver/plain", SQLServer, strings.ReplaceAll(plain, "$1", "@p1")},
		{"sqlserver/secret", SQLServer, "CREATE LOGIN bob WITH PASSWORD = N'S3cretPW!', CHECK_POLICY = OFF"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.q)))
			for b.Loop() {
				sink, _ = c.f(c.q)
			}
		})
	}
}

func TestMaskErrorMessage(t *testing.T) {
	_, f := MySQL("CREATE USERR frank IDENTIFIED BY 'it''s S3cret'")
	msg := "You have an error in your SQL syntax; check the manual near 'USERR frank IDENTIFIED BY 'it''s S3cret'' at line 1"
	if got := f.Mask(msg); strings.Contains(got, "S3cret") {
		t.Fatalf("masked %q", got)
	}
	if got := (Found{}).Mask(msg); got != msg {
		t.Fatalf("nothing to mask changed %q", got)
	}
}
