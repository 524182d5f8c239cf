package postgres_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/postgres"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/test/harness"
)

// memEvents keeps events in memory.
type memEvents struct {
	mu  sync.Mutex
	evs []events.Event
}

func (m *memEvents) Publish(ctx context.Context, ev events.Event) error {
	return m.PublishBatch(ctx, []events.Event{ev})
}

func (m *memEvents) PublishBatch(_ context.Context, evs []events.Event) error {
	m.mu.Lock()
	m.evs = append(m.evs, evs...)
	m.mu.Unlock()
	return nil
}

// TestRDSProxyPassword plays RDS Proxy with a real PostgreSQL that asks
// for a cleartext password over TLS (as RDS Proxy asks for the IAM token):
// the Password hook answers for a database with aws.rds_proxy, the token
// never reaches an event, and a database without it is refused rather
// than sent a password.
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
	eng := postgres.New(postgres.Options{Logger: quiet(), Password: func(_ context.Context, db *agent.Database, user string) (string, error) {
		mu.Lock()
		asked = append(asked, db.Config.Name+"/"+user+"@"+db.Addr)
		mu.Unlock()
		return token, nil
	}})
	dbTLS := config.DatabaseTLS{Mode: "verify-full", CACertFile: pg.ServerCAFile}
	rec := &memEvents{}
	addr := s.Serve(t, agenttest.Agent{
		Roles: "kind: role\nmetadata: {name: dev}\nspec:\n  allow:\n    db_labels: {'*': '*'}\n    db_users: [app]\n    db_names: ['*']\n",
		ServerConfig: agent.ServerConfig{
			Databases: []config.Database{
				{Name: "proxy", Protocol: "postgres", URI: pg.Addr(), TLS: dbTLS, AWS: config.AWS{Region: "us-east-1", RDSProxy: true}},
				{Name: "plain", Protocol: "postgres", URI: pg.Addr(), TLS: dbTLS},
			},
			Recorder: rec,
			Engines:  map[string]agent.Engine{"postgres": eng},
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
	// Wait for the proxy session's last event, so every event it had is
	// checked.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		rec.mu.Lock()
		ended := false
		for _, ev := range rec.evs {
			if _, ok := ev.(*events.SessionEnd); ok {
				ended = true
			}
		}
		rec.mu.Unlock()
		if ended {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session never ended")
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ev := range rec.evs {
		b, _ := json.Marshal(ev)
		if strings.Contains(string(b), token) {
			t.Fatalf("the token reached an event: %s", b)
		}
	}
}
