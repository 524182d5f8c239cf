package protocol

import (
	"go/build"
	"slices"
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range All() {
		if p.Name == "" || seen[p.Name] {
			t.Fatalf("protocol %q: empty or listed twice", p.Name)
		}
		seen[p.Name] = true
		for _, a := range p.Aliases {
			if seen[a] || Known(a) {
				t.Errorf("%s: alias %q is listed twice or is a name", p.Name, a)
			}
			seen[a] = true
		}
		if p.DefaultPort == "" || p.Display == "" || p.OCSF == "" {
			t.Errorf("%s: port, display and OCSF names are required: %+v", p.Name, p)
		}
		// An engine is named after the protocol it speaks, which must be
		// served by itself.
		if e, ok := Lookup(p.Engine); !ok || e.Engine != e.Name {
			t.Errorf("%s: engine %q is not a protocol served by itself", p.Name, p.Engine)
		}
	}
	if EngineOf(CockroachDB) != Postgres {
		t.Errorf("cockroachdb is served by %q, want the postgres engine", EngineOf(CockroachDB))
	}
	if Known("oracle") || EngineOf("oracle") != "" || Get("oracle").DefaultPort != "" {
		t.Error("unknown protocols must be unknown")
	}
	if got := List(); got != "postgres, cockroachdb, mysql, sqlserver or redis" {
		t.Errorf("List() = %q", got)
	}
	if Get(SQLServer).DBName != DBNameUnchecked || Get(MySQL).DBName != DBNameChecked || Get(Postgres).DBName != DBNameFixed {
		t.Error("db_name meanings changed")
	}
}

func TestResolve(t *testing.T) {
	for in, want := range map[string]string{
		"postgres": Postgres, "PostgreSQL": Postgres, "cockroachdb": CockroachDB,
		"mysql": MySQL, "MariaDB": MySQL, "sqlserver": SQLServer, "mssql": SQLServer,
	} {
		if p, ok := Resolve(in); !ok || p.Name != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, p.Name, ok, want)
		}
	}
	if _, ok := Resolve("oracle"); ok {
		t.Error("Resolve(oracle) found a protocol")
	}
	// Stored names are exact: an alias is not a name.
	if Known("mariadb") || Known("Postgres") {
		t.Error("Known accepts an alias or another case")
	}
}

func TestServerName(t *testing.T) {
	if ServerName("orders") != "orders" {
		t.Fatal("the server name of a database is its name")
	}
	for sni, want := range map[string][]string{
		"orders":                   {"orders"},
		"orders.agent.example.com": {"orders.agent.example.com", "orders"},
		".x":                       {".x"},
	} {
		if got := Databases(sni); !slices.Equal(got, want) {
			t.Errorf("Databases(%q) = %q, want %q", sni, got, want)
		}
	}
}

// TestImportsNothingOfOurs keeps the package a leaf: tg and every other part
// import it, so anything it imported would be linked into all of them.
func TestImportsNothingOfOurs(t *testing.T) {
	p, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range p.Imports {
		if strings.Contains(imp, ".") {
			t.Errorf("protocol imports %s; it may import the standard library only", imp)
		}
	}
}
