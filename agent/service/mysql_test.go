package service_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tollgate-db/tollgate/agent/service"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/protocol"
	"github.com/tollgate-db/tollgate/test/harness"
)

// With db_service.mysql_listen the agent also greets MySQL clients that
// connect without tg: go-sql-driver/mysql with TLS and a user certificate
// reaches MariaDB on that port, through the same server, access check and
// audit as the main port; a database of another protocol named there is
// refused in MySQL's form.
func TestServiceMySQLPort(t *testing.T) {
	f := newFixture(t)
	certPEM, keyPEM, clientCA, err := f.cas.IssueDBServer([]string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dbCA, _ := f.cas.CertPEM(ca.DB)
	my := harness.MariaDBWith(t, harness.MariaDBOptions{
		TLS:   harness.TLSOptions{ClientCA: clientCA, ServerCert: certPEM, ServerKey: keyPEM, ServerCA: dbCA},
		Users: []string{"app"},
	})
	cfg, err := config.Parse([]byte(`
cluster_name: test
db_service:
  listen: 127.0.0.1:0
  mysql_listen: 127.0.0.1:0
  databases:
    - name: pg1
      protocol: postgres
      uri: ` + f.pg.Addr() + `
    - name: my1
      protocol: mysql
      uri: ` + my.Addr() + `
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = f.cfg.DataDir
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := service.Start(ctx, service.Options{Config: cfg, JS: f.js, Recorder: f.pub, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.Ports[protocol.MySQL], "127.0.0.1:") || s.Ports[protocol.MySQL] == s.Addr {
		t.Fatalf("mysql port %q, main port %q", s.Ports[protocol.MySQL], s.Addr)
	}
	id := identity.Identity{User: "alice", Roles: []string{"access"},
		Traits: map[string][]string{identity.TraitDBUsers: {"app"}, identity.TraitDBNames: {my.Database}}}
	open := func(name string) *sql.DB {
		t.Helper()
		key := "svc-" + name
		if err := mysql.RegisterTLSConfig(key, f.userTLS(t, name, id)); err != nil {
			t.Fatal(err)
		}
		db, err := sql.Open("mysql", "app@tcp("+s.Ports[protocol.MySQL]+")/"+my.Database+"?tls="+key+"&timeout=10s")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	var who string
	if err := open("my1").QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&who); err != nil {
		t.Fatalf("query through the MySQL port: %v", err)
	}
	if !strings.HasPrefix(who, "app@") {
		t.Fatalf("current user %q", who)
	}
	err = open("pg1").PingContext(ctx)
	if err == nil || !strings.Contains(err.Error(), `database "pg1" speaks postgres`) {
		t.Fatalf("postgres database on the MySQL port: %v", err)
	}

	queries := auditOfType(t, f.js, "db.session.query")
	found := false
	for _, ev := range queries {
		found = found || (ev["db_service"] == "my1" && ev["db_query"] == "SELECT CURRENT_USER()" && ev["user"] == "alice")
	}
	if !found {
		t.Fatalf("no query event of alice's SELECT CURRENT_USER() on my1 among %d", len(queries))
	}
	cancel()
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
}
