package postgres_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/postgres"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/test/harness"
)

// TestRDSProxyPassword plays RDS Proxy with a real PostgreSQL that asks
// for a cleartext password over TLS (as RDS Proxy asks for the IAM token):
// the Password hook answers for a database with aws.rds_proxy, the token
// never reaches an event or the store, and a database without it is
// refused rather than sent a password.
func TestRDSProxyPassword(t *testing.T) {
	s := agenttest.New(t, agenttest.Options{})
	pg := harness.PostgresWith(t, harness.PostgresOptions{TLS: harness.TLSOptions{ClientCA: s.DBClientCA(t)}, Users: []string{"app"}})
	if err := os.WriteFile(filepath.Join(pg.DataDir, "pg_hba.conf"), []byte("local all all trust\nhostssl all all 127.0.0.1/32 password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pg.MustExec(t, "select pg_reload_conf()")
	const token = "proxy-iam-token-for-app"
	pg.MustExec(t, "alter role app password '"+token+"'")

	var (
		mu    sync.Mutex
		asked []string
	)
	eng := postgres.New(postgres.Options{Logger: agenttest.Quiet(), Password: func(_ context.Context, db *agent.Database, user string) (string, error) {
		mu.Lock()
		asked = append(asked, db.Config.Name+"/"+user+"@"+db.Addr)
		mu.Unlock()
		return token, nil
	}})
	dbTLS := config.DatabaseTLS{Mode: "verify-full", CACertFile: pg.ServerCAFile}
	addr := s.Serve(t, agenttest.Agent{
		Roles: "kind: role\nmetadata: {name: dev}\nspec:\n  allow:\n    db_labels: {'*': '*'}\n    db_users: [app]\n    db_names: ['*']\n",
		ServerConfig: agent.ServerConfig{
			Databases: []config.Database{
				{Name: "proxy", Protocol: "postgres", URI: pg.Addr(), TLS: dbTLS, AWS: config.AWS{Region: "us-east-1", RDSProxy: true}},
				{Name: "plain", Protocol: "postgres", URI: pg.Addr(), TLS: dbTLS},
			},
			Engines: map[string]agent.Engine{"postgres": eng},
		}})
	ctx := context.Background()
	connect := func(sni string) (*pgx.Conn, error) {
		host, port, _ := net.SplitHostPort(addr)
		cfg, err := pgx.ParseConfig("host=" + host + " port=" + port + " user=app dbname=postgres sslmode=disable")
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLSConfig = s.TLS(t, sni)
		return pgx.ConnectConfig(ctx, cfg)
	}
	conn, err := connect("proxy")
	if err != nil {
		t.Fatalf("through the proxy database: %v", err)
	}
	var who string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&who); err != nil || who != "app" {
		t.Fatalf("current_user %q: %v", who, err)
	}
	conn.Close(ctx)
	if len(asked) != 1 || asked[0] != "proxy/app@"+pg.Addr() {
		t.Fatalf("password asked for %q", asked)
	}
	_, err = connect("plain")
	if err == nil || !strings.Contains(err.Error(), "cleartext password authentication") {
		t.Fatalf("a database without rds_proxy asking for a password: %v", err)
	}
	if len(asked) != 1 {
		t.Fatalf("a password was given to a database without rds_proxy: %q", asked)
	}
	// Once the proxy session has ended, every event it had is stored.
	evs := s.WaitAudit(t, "the session's end", agenttest.Count("db.session.end", 1))
	agenttest.NoSecret(t, evs, s.NATS.StoreDir, token)
}
