package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	agentredis "github.com/tollgate-db/tollgate/agent/redis"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/protocol"
	"github.com/tollgate-db/tollgate/test/harness"
)

// redisTarget is one way for redis-benchmark to reach Redis: an address,
// the TLS files it presents and trusts, and the server name it sends.
type redisTarget struct {
	name                  string
	addr                  string
	cert, key, cacert, sn string
}

// redisBench is a Redis with TLS and client certificates, and the four
// ways to reach it: directly, through a byte-copying TLS relay, and
// through the agent in strict and in async mode (the audit publisher on
// an embedded JetStream reached in-process, as tollgate start runs it).
type redisBench struct {
	db      *harness.RedisServer
	targets []redisTarget
}

func setupRedisBench(tb testing.TB) *redisBench {
	tb.Helper()
	st := agentStack(tb, "redis-benchmark", "redis-tools")
	dir, cas, clientCAPEM := st.Dir, st.CAs, st.DBClientCA(tb)
	db := harness.RedisWith(tb, harness.RedisOptions{TLS: harness.TLSOptions{ClientCA: clientCAPEM}, Users: []string{"app"}})
	m := &redisBench{db: db}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)

	certFile, keyFile, _ := db.ClientCert(tb, "app")
	m.targets = append(m.targets, redisTarget{name: "direct", addr: db.Addr(), cert: certFile, key: keyFile, cacert: db.ServerCAFile, sn: "localhost"})

	// The relay: TLS from the client, TLS with a db-client certificate to
	// Redis, bytes copied in between.
	dbKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dbCert, _, err := cas.IssueDBClient(dbKey.Public(), "app", time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	dbTLSCert := tls.Certificate{Certificate: [][]byte{dbCert.Raw}, PrivateKey: dbKey}
	relayCA := harness.NewCA(tb, "redis relay CA")
	relayPair := relayCA.IssueServer(tb, "localhost", "127.0.0.1")
	relayTLS := &tls.Config{Certificates: []tls.Certificate{relayPair.TLSCertificate()}}
	upTLS := db.TLSConfig(&dbTLSCert)
	relayLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		_ = serveConns(ctx, relayLn, func(ctx context.Context, c net.Conn) error {
			tc := tls.Server(c, relayTLS)
			defer tc.Close()
			if err := tc.HandshakeContext(ctx); err != nil {
				return err
			}
			up, err := tls.Dial("tcp", db.Addr(), upTLS)
			if err != nil {
				return err
			}
			defer up.Close()
			go func() { _, _ = io.Copy(up, tc); up.Close() }()
			_, err = io.Copy(tc, up)
			return err
		})
	}()
	relayCAFile := filepath.Join(dir, "relay-ca.crt")
	relayCA.WriteCert(tb, relayCAFile)
	m.targets = append(m.targets, redisTarget{name: "relay", addr: relayLn.Addr().String(), cert: certFile, key: keyFile, cacert: relayCAFile, sn: "localhost"})

	// The agent, one database per audit mode.
	var dbs []config.Database
	for _, mode := range []string{"strict", "async"} {
		dbs = append(dbs, config.Database{Name: "rd-" + mode, Protocol: protocol.Redis, URI: db.Addr(), AuditMode: mode,
			TLS: config.DatabaseTLS{Mode: "verify-full", CACertFile: db.ServerCAFile, ServerName: "localhost"}})
	}
	addr := st.Serve(tb, agenttest.Agent{
		Roles: "kind: role\nmetadata: {name: bench}\nspec:\n  allow:\n    db_labels: {'*': '*'}\n    db_users: [app]\n    db_names: ['*']\n",
		ServerConfig: agent.ServerConfig{
			Databases: dbs,
			Engines:   map[string]agent.Engine{protocol.Redis: agentredis.New(agentredis.Options{Logger: agenttest.Quiet()})},
		}})
	for _, mode := range []string{"strict", "async"} {
		m.targets = append(m.targets, redisTarget{name: "tollgate " + mode, addr: addr,
			cert: st.UserCertFile, key: st.UserKeyFile, cacert: st.HostCAFile, sn: "rd-" + mode})
	}
	return m
}

// run is one redis-benchmark run of SET and GET through t; it returns
// requests per second by test.
func (m *redisBench) run(tb testing.TB, t redisTarget, requests, clients, pipeline int) map[string]float64 {
	host, port, _ := net.SplitHostPort(t.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-benchmark", "--tls", "--cert", t.cert, "--key", t.key, "--cacert", t.cacert, "--sni", t.sn,
		"-h", host, "-p", port, "--user", "app", "-a", "unused", "-t", "set,get",
		"-n", strconv.Itoa(requests), "-c", strconv.Itoa(clients), "-P", strconv.Itoa(pipeline), "--csv").CombinedOutput()
	if err != nil {
		tb.Fatalf("redis-benchmark through %s: %v\n%s", t.name, err, out)
	}
	res := map[string]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(strings.TrimSpace(line), ",")
		if len(f) < 2 {
			continue
		}
		name := strings.Trim(f[0], `"`)
		if rps, err := strconv.ParseFloat(strings.Trim(f[1], `"`), 64); err == nil {
			res[name] = rps
		}
	}
	if res["SET"] <= 0 || res["GET"] <= 0 {
		tb.Fatalf("redis-benchmark through %s: no SET/GET figures in\n%s", t.name, out)
	}
	return res
}

// table runs SET and GET through every target, one command at a time and
// pipelined, and formats requests per second with the ratio to direct.
func (m *redisBench) table(tb testing.TB, requests, clients int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Redis: redis-benchmark SET/GET, %d requests, %d clients, TLS on both legs, Redis 7\n\n", requests, clients)
	fmt.Fprintf(&b, "Load average before: %s.\n\nRequests per second (ratio to direct):\n\n| test |", LoadAverage())
	for _, t := range m.targets {
		b.WriteString(" " + t.name + " |")
	}
	b.WriteString(" strict/relay |\n|---|")
	for range m.targets {
		b.WriteString("---|")
	}
	b.WriteString("---|\n")
	for _, pipeline := range []int{1, 16} {
		res := map[string]map[string]float64{}
		for _, t := range m.targets {
			res[t.name] = m.run(tb, t, requests, clients, pipeline)
		}
		for _, test := range []string{"SET", "GET"} {
			fmt.Fprintf(&b, "| %s -P %d |", test, pipeline)
			for _, t := range m.targets {
				fmt.Fprintf(&b, " %.0f (%.2f) |", res[t.name][test], ratio(res[t.name][test], res["direct"][test]))
			}
			fmt.Fprintf(&b, " %.2f |\n", ratio(res["tollgate strict"][test], res["relay"][test]))
		}
	}
	return b.String()
}

// TestRedisBenchSmoke runs the set-up and a short run through every
// target, so make test proves the benchmark works without timing anything.
func TestRedisBenchSmoke(t *testing.T) {
	m := setupRedisBench(t)
	for _, tg := range m.targets {
		m.run(t, tg, 200, 2, 4)
	}
}

// BenchmarkRedisBenchmark is the end-to-end comparison make bench runs
// once: redis-benchmark SET and GET, one at a time and 16 pipelined, with
// 8 clients, directly, through the relay and through the agent in strict
// and async mode.
func BenchmarkRedisBenchmark(b *testing.B) {
	if b.N > 1 {
		b.Skip("one run is the measurement")
	}
	requests := 50000
	if s := os.Getenv("TOLLGATE_BENCH_REDIS_REQUESTS"); s != "" {
		requests, _ = strconv.Atoi(s)
	}
	m := setupRedisBench(b)
	fmt.Println(m.table(b, requests, 8))
}
