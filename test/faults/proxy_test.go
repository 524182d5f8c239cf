package faults

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/test/harness"
)

// proxyStack is a broker+proxy process (tollgate start, broker role) on
// its own NATS server, an agent process configured only with the proxy's
// address, a join token and the host CA's pin (plus nats.urls: the event
// plane does not go through the proxy yet), and PostgreSQL.
type proxyStack struct {
	*Stack
	agentCfg string
	agent    *Node
	view     *presence.View
	// link, when set, carries the agent's tunnel to the proxy: the
	// proxy announces the link's address, so the agent learns no other
	// way to it.
	link *Link
	// embedded: the broker process runs the NATS server and the agent
	// reaches it through the proxy; else both use a nats-server process.
	embedded bool
}

// proxyStackOptions shape newProxyStack.
type proxyStackOptions struct {
	// linked puts a Link between the agent and the proxy.
	linked bool
	// embedded runs NATS in the broker's process, reached by the agent
	// through the proxy only: its configuration has no nats section.
	embedded bool
	// mariadb adds MariaDB (database MyName) to the agent.
	mariadb bool
}

// newProxyStack starts the broker+proxy of a Stack without its agent and
// an agent that dials out to the proxy; it returns once PostgreSQL is
// online through the proxy.
func newProxyStack(t *testing.T, o proxyStackOptions) *proxyStack {
	t.Helper()
	bin := binaries(t)
	s := &Stack{Dir: t.TempDir(), Bin: bin}
	s.DataDir = filepath.Join(s.Dir, "data")
	var err error
	if !o.embedded {
		s.NATS, err = StartNATS(bin.NATSServer, NATSOptions{Dir: filepath.Join(s.Dir, "nats")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.NATS.Stop() })
		s.NATSURLs = []string{s.NATS.URL()}
	}
	ps := &proxyStack{Stack: s, embedded: o.embedded}
	ps.startBroker(t, o.linked)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := presence.Open(ctx, s.JS)
	if err != nil {
		t.Fatal(err)
	}
	if ps.view, err = presence.Watch(ctx, kv); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(bin.Tollgate, "--config", s.Config, "tokens", "add", "--type=db").CombinedOutput()
	if err != nil {
		t.Fatalf("tokens add: %v\n%s", err, out)
	}
	token := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	pin := ""
	for l := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "broker_ca_pin: "); ok {
			pin = v
		}
	}
	if pin == "" {
		t.Fatalf("no broker_ca_pin in:\n%s", out)
	}
	q := strconv.Quote
	natsYAML := "nats:\n  urls: [" + q(strings.Join(s.NATSURLs, ",")) + "]\n"
	if o.embedded {
		natsYAML = ""
	}
	myYAML := ""
	if o.mariadb {
		dbClient, err := s.CAs.CertPEM(ca.DBClient)
		if err != nil {
			t.Fatal(err)
		}
		// general_log is on: the server's own record of every statement.
		s.MariaDB = harness.MariaDBWith(t, harness.MariaDBOptions{TLS: harness.TLSOptions{ClientCA: dbClient},
			Users: []string{MyUser}, Args: []string{"--max-connections=100"}})
		myYAML = fmt.Sprintf("    - name: %s\n      protocol: mysql\n      uri: %s\n      tls: {mode: verify-full, ca_cert_file: %s}\n",
			MyName, q(s.MariaDB.Addr()), q(s.MariaDB.ServerCAFile))
	}
	ps.agentCfg = filepath.Join(s.Dir, "agent.yaml")
	tunnelTo := s.ProxyAddr
	if ps.link != nil {
		tunnelTo = ps.link.Addr()
	}
	yaml := fmt.Sprintf(`cluster_name: %s
data_dir: %s
%sbroker: {enabled: false}
proxy: {enabled: false}
db_service:
  proxy_addrs: [%s]
  join_token: %s
  broker_ca_pin: %s
  databases:
    - name: %s
      protocol: postgres
      uri: %s
      tls: {mode: verify-full, ca_cert_file: %s}
%slog: {level: info}
`, Cluster, q(filepath.Join(s.Dir, "agent-data")), natsYAML, q(tunnelTo), q(token), q(pin), PGName, q(s.PG.Addr()), q(s.PG.ServerCAFile), myYAML)
	if err := os.WriteFile(ps.agentCfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ps.agent = &Node{Name: "agent", Bin: bin.Tollgate, Config: ps.agentCfg, Log: filepath.Join(s.Dir, "agent.log"),
		Ready: func() error {
			if !ps.view.Online(PGName) {
				return fmt.Errorf("%s has no route in presence", PGName)
			}
			return nil
		}}
	if err := ps.agent.Start(); err != nil {
		t.Fatalf("%v\n%s", err, ps.agent.LogTail())
	}
	t.Cleanup(func() { _ = ps.agent.Stop() })
	return ps
}

// startBroker starts PostgreSQL and the broker with its proxy, as
// NewStack does, without an agent.
func (ps *proxyStack) startBroker(t *testing.T, linked bool) {
	s := ps.Stack
	var err error
	if s.CAs, err = ca.Open(s.DataDir); err != nil {
		t.Fatal(err)
	}
	s.PG = StartPostgres(t, s.CAs, 0, 1)
	s.HostCAFile, s.UserCertFile, s.UserKeyFile = UserFiles(t, s.CAs, s.Dir, TollgateUser)
	s.ProxyAddr = freeAddr(t)
	natsAddr := ""
	if ps.embedded {
		natsAddr = freeAddr(t)
	}
	public := ""
	if linked {
		if ps.link, err = NewLink(s.ProxyAddr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ps.link.Close)
		public = ps.link.Addr()
	}
	s.Config = WriteConfig(t, filepath.Join(s.Dir, "tollgate.yaml"), ConfigParams{DataDir: s.DataDir, NATSURLs: s.NATSURLs,
		ProxyListen: s.ProxyAddr, ProxyPublic: public, AgentListen: freeAddr(t), PGAddr: s.PG.Addr(), PGCAFile: s.PG.ServerCAFile,
		Embedded: map[bool]string{true: fmt.Sprintf("  embedded:\n    listen: %q\n", natsAddr)}[ps.embedded]})
	s.Broker = &Node{Name: "broker", Bin: s.Bin.Tollgate, Config: s.Config, Roles: []string{"broker"},
		Ready: dialable(s.ProxyAddr), Log: filepath.Join(s.Dir, "broker.log")}
	if err := s.Broker.Start(); err != nil {
		t.Fatalf("%v\n%s", err, s.Broker.LogTail())
	}
	t.Cleanup(func() { _ = s.Broker.Stop() })
	// The test reads the event store: the nats-server process openly, the
	// embedded server as the auditor over its TLS listener.
	var url string
	var opts []nats.Option
	if !ps.embedded {
		url = s.NATS.URL()
	} else {
		creds, err := natsserver.LoadCredentials(filepath.Join(s.DataDir, "nats-auth"))
		if err != nil {
			t.Fatal(err)
		}
		if opts, err = creds.Options(natsserver.Auditor); err != nil {
			t.Fatal(err)
		}
		url = "tls://" + natsAddr
		opts = append(opts, nats.RootCAs(filepath.Join(creds.Dir, natsserver.TLSCertFile)))
	}
	if s.NC, err = nats.Connect(url, append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.NC.Close)
	if s.JS, err = jetstream.New(s.NC); err != nil {
		t.Fatal(err)
	}
}

// listeningSockets are the TCP sockets of process pid in the LISTEN
// state, and how many TCP sockets it has in all: its open socket inodes
// looked up in its network namespace's tables.
func listeningSockets(t *testing.T, pid int) (listening []string, total int) {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || !inodes[fs[9]] {
				continue
			}
			total++
			if fs[3] == "0A" {
				listening = append(listening, table+" "+fs[1])
			}
		}
		f.Close()
	}
	return listening, total
}

// An agent on another machine, configured with the proxy's address, a
// join token and the pin and nothing of NATS, joins through the proxy's
// port, reaches the event plane through it, listens on no port, and
// serves psql and pgbench through the proxy; every statement in
// PostgreSQL's log has its event.
func TestAgentBehindProxyProcesses(t *testing.T) {
	ps := newProxyStack(t, proxyStackOptions{embedded: true, mariadb: true})
	if b, err := os.ReadFile(ps.agentCfg); err != nil || strings.Contains(string(b), "nats") {
		t.Fatalf("the agent's configuration names NATS (%v):\n%s", err, b)
	}
	if b, err := os.ReadFile(ps.agent.Log); err != nil || !strings.Contains(string(b), "nats connected through the proxy") {
		t.Fatalf("the agent did not reach NATS through the proxy (%v):\n%s", err, ps.agent.LogTail())
	}
	listening, total := listeningSockets(t, ps.agent.Pid())
	if len(listening) > 0 {
		t.Fatalf("the agent listens on %v", listening)
	}
	if total < 2 {
		t.Fatalf("the agent has %d TCP sockets: want its tunnel and NATS (is /proc read right?)", total)
	}
	// `tollgate db ls` on the broker's configuration: online, through
	// the proxy.
	out, err := exec.Command(ps.Bin.Tollgate, "--config", ps.Config, "db", "ls").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "online") {
		t.Fatalf("db ls: %v\n%s", err, out)
	}
	env := ClientEnv(ps.ProxyAddr, ps.HostCAFile, ps.UserCertFile, ps.UserKeyFile)
	psql := exec.Command("psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", "select 'through the proxy'", "-c", "select count(*) from pgbench_branches")
	psql.Env = env
	if out, err := psql.CombinedOutput(); err != nil || !strings.Contains(string(out), "through the proxy") {
		t.Fatalf("psql through the proxy: %v\n%s", err, out)
	}
	// Ctrl-C in psql: libpq 15 sends the cancel request without TLS to
	// the proxy, which finds the agent whose key it is.
	sleeper := exec.Command("psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", "select pg_sleep(30)")
	sleeper.Env = env
	var sleepOut strings.Builder
	sleeper.Stdout, sleeper.Stderr = &sleepOut, &sleepOut
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); !sleepingInPG(t, ps.Stack); {
		if time.Now().After(deadline) {
			t.Fatalf("pg_sleep never ran: %s", sleepOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	interrupted := time.Now()
	if err := sleeper.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	_ = sleeper.Wait()
	if took := time.Since(interrupted); !strings.Contains(sleepOut.String(), "canceling statement due to user request") || took > 10*time.Second {
		t.Fatalf("psql after Ctrl-C (%s): %s", took, sleepOut.String())
	}
	t.Logf("psql Ctrl-C through the proxy: pg_sleep(30) cancelled in %s", time.Since(interrupted).Round(time.Millisecond))
	pb := exec.Command("pgbench", "-n", "-c", "4", "-T", "5", "postgres")
	pb.Env = env
	pbOut, err := pb.CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench through the proxy: %v\n%s", err, pbOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, bin := range []string{"mariadb", "sysbench"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed (Debian: mariadb-client, sysbench)", bin)
		}
	}
	// MariaDB through the proxy: the mariadb client and sysbench over a
	// plaintext local port carried in TLS with SNI my, as tg's tunnel does.
	tun, err := NewTunnel(ps.ProxyAddr, MyName, ps.HostCAFile, ps.UserCertFile, ps.UserKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	host, port, _ := net.SplitHostPort(tun.Addr())
	my := exec.CommandContext(ctx, "mariadb", "--host="+host, "--port="+port, "--skip-ssl", "--user="+MyUser, "--database="+MyDatabase,
		"-N", "-e", "select 'mariadb through the proxy'")
	my.Env = childEnv()
	if out, err := my.CombinedOutput(); err != nil || !strings.Contains(string(out), "mariadb through the proxy") {
		t.Fatalf("mariadb through the proxy: %v\n%s", err, out)
	}
	if err := SysbenchPrepare(ctx, tun.Addr()); err != nil {
		t.Fatalf("%v\nagent:\n%s", err, ps.agent.LogTail())
	}
	sb := &Sysbench{Addr: tun.Addr(), Threads: 2, Slice: 4 * time.Second}
	sb.Run(ctx, time.Now().Add(4*time.Second+500*time.Millisecond))
	if sb.Transactions() == 0 {
		t.Fatalf("sysbench through the proxy: no transaction; errors %v", sb.Errors())
	}
	l := &Ledger{JS: ps.JS, PG: ps.PG, MariaDB: ps.MariaDB}
	var now Totals
	for {
		if now, _, err = l.Check(ctx); err != nil {
			t.Fatal(err)
		}
		if (now.Missing == 0 && now.MyMissing == 0) || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("through the proxy: %d statements in PostgreSQL's log, %d in MariaDB's general log, %d events, %d and %d without an event; pgbench: %s; sysbench: %d transactions",
		now.Statements, now.MyStatements, now.Events, now.Missing, now.MyMissing, lastLines(string(pbOut), "tps ="), sb.Transactions())
	if now.Statements < 100 || now.MyStatements < 100 || now.Missing != 0 || now.MyMissing != 0 || now.DuplicateIDs != 0 || now.Gaps != 0 {
		t.Fatalf("ledger %+v", now)
	}
}

// sleepingInPG says whether pg_sleep runs in PostgreSQL, asked as its
// superuser over its socket.
func sleepingInPG(t *testing.T, s *Stack) bool {
	t.Helper()
	cmd := exec.Command("psql", "-X", "-At", "-c", "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'")
	cmd.Env = AdminEnv(s.PG)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pg_stat_activity: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out)) == "1"
}

// lastLines are the lines of out containing s.
func lastLines(out, s string) string {
	var got []string
	for l := range strings.Lines(out) {
		if strings.Contains(l, s) {
			got = append(got, strings.TrimSpace(l))
		}
	}
	return strings.Join(got, "; ")
}

// copyDataDir copies the broker's data dir (CAs, signing key) for a
// second broker+proxy process, leaving out its lock.
func copyDataDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	_ = os.Remove(filepath.Join(to, "broker.lock"))
}

// Two broker+proxy processes; the agent is given the first and learns the
// second from presence. The first is SIGKILLed during a pgbench run
// through the second: that run and a session through the second go on,
// new connections through it succeed at once, the dead proxy's routes
// lapse, and every statement in PostgreSQL's log has its event.
func TestProxySIGKILLDuringPgbench(t *testing.T) {
	ps := newProxyStack(t, proxyStackOptions{})
	// The second proxy: a broker process of its own on a copy of the
	// data dir (same CAs), the same NATS.
	dir2 := filepath.Join(ps.Dir, "data2")
	copyDataDir(t, ps.DataDir, dir2)
	proxy2 := freeAddr(t)
	cfg2 := WriteConfig(t, filepath.Join(ps.Dir, "tollgate2.yaml"), ConfigParams{DataDir: dir2, NATSURLs: ps.NATSURLs,
		ProxyListen: proxy2, AgentListen: freeAddr(t), PGAddr: ps.PG.Addr(), PGCAFile: ps.PG.ServerCAFile})
	second := &Node{Name: "broker2", Bin: ps.Bin.Tollgate, Config: cfg2, Roles: []string{"broker"},
		Ready: dialable(proxy2), Log: filepath.Join(ps.Dir, "broker2.log")}
	if err := second.Start(); err != nil {
		t.Fatalf("%v\n%s", err, second.LogTail())
	}
	t.Cleanup(func() { _ = second.Stop() })
	deadline := time.Now().Add(30 * time.Second)
	for len(ps.view.ProxyIDs(PGName)) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the agent has no tunnel to the second proxy: routes %v\n%s", ps.view.Routes(PGName), ps.agent.LogTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	routes := ps.view.Routes(PGName)
	var firstID string
	for _, r := range routes {
		if r.ProxyAddr == ps.ProxyAddr {
			firstID = r.Proxy
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	through2, err := PgxConfig(proxy2, ps.HostCAFile, ps.UserCertFile, ps.UserKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	session, err := pgxConnect(ctx, through2)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close(ctx)
	pb := exec.CommandContext(ctx, "pgbench", "-n", "-c", "4", "-j", "2", "-T", "6", "postgres")
	pb.Env = ClientEnv(proxy2, ps.HostCAFile, ps.UserCertFile, ps.UserKeyFile)
	pbDone := make(chan error, 1)
	var pbOut []byte
	go func() {
		var err error
		pbOut, err = pb.CombinedOutput()
		pbDone <- err
	}()
	time.Sleep(2 * time.Second)
	if err := ps.Broker.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// New connections through the second proxy, at once.
	var firstOK time.Duration
	for {
		c, err := pgxConnect(ctx, through2)
		if err == nil {
			_, err = c.Exec(ctx, "select 'after the kill'")
			c.Close(ctx)
		}
		if err == nil {
			firstOK = time.Since(killed)
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("no new connection through the second proxy 10s after the kill: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := session.Exec(ctx, "select 'the session goes on'"); err != nil {
		t.Fatalf("the session through the second proxy: %v", err)
	}
	if err := <-pbDone; err != nil || strings.Contains(string(pbOut), "aborted") {
		t.Fatalf("pgbench through the second proxy: %v\n%s", err, pbOut)
	}
	// The dead proxy's routes lapse with their lease.
	lapse := time.Now()
	for slices.Contains(ps.view.ProxyIDs(PGName), firstID) {
		if time.Since(lapse) > presence.DefaultLease+5*time.Second {
			t.Fatalf("the killed proxy's route is still in presence %s after the kill", time.Since(killed))
		}
		time.Sleep(100 * time.Millisecond)
	}
	lapsed := time.Since(killed)
	l := &Ledger{JS: ps.JS, PG: ps.PG}
	var now Totals
	for {
		if now, _, err = l.Check(ctx); err != nil {
			t.Fatal(err)
		}
		if now.Missing == 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("proxy SIGKILL during pgbench through the other: first new connection %s after the kill, route of the dead proxy gone %s after it; pgbench %s; %d statements, %d without an event",
		firstOK.Round(time.Millisecond), lapsed.Round(100*time.Millisecond), lastLines(string(pbOut), "tps ="), now.Statements, now.Missing)
	if firstOK > time.Second {
		t.Fatalf("a new connection took %s after the kill, want under 1s", firstOK)
	}
	report.Add(fmt.Sprintf("## Proxy SIGKILL\n\n`go test ./test/faults -run TestProxySIGKILLDuringPgbench`: two broker+proxy processes, the agent given the first and learning the second from presence; "+
		"the first SIGKILLed during pgbench through the second. pgbench: %s, no client aborted; first new session through the second %s after the kill; "+
		"the dead proxy's route left presence %s after it (its lease); %d statements in PostgreSQL's log, %d without an event.\n",
		lastLines(string(pbOut), "tps ="), firstOK.Round(time.Millisecond), lapsed.Round(100*time.Millisecond), now.Statements, now.Missing))
	if now.Statements < 100 || now.Missing != 0 || now.DuplicateIDs != 0 || now.Gaps != 0 {
		t.Fatalf("ledger %+v", now)
	}
}

// pgxConnect opens a session with a bound on the wait.
func pgxConnect(ctx context.Context, c *pgx.ConnConfig) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, c)
}

// Faults of the path through the proxy, under pgbench through it: the
// agent's tunnel cut for a while (a pausable link between agent and
// proxy) and the agent process SIGKILLed and started again. Each row: what
// clients saw, how long until a new session succeeded again, and the
// statements without an event (0).
func TestProxyPathFaults(t *testing.T) {
	ps := newProxyStack(t, proxyStackOptions{linked: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ledger := &Ledger{JS: ps.JS, PG: ps.PG}
	if _, _, err := ledger.Check(ctx); err != nil {
		t.Fatal(err)
	}
	pc, err := PgxConfig(ps.ProxyAddr, ps.HostCAFile, ps.UserCertFile, ps.UserKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	outage := cfg.outage
	if cfg.full {
		outage = 10 * time.Second
	}
	type row struct {
		name   string
		inject func()
		heal   func()
	}
	rows := []row{
		{fmt.Sprintf("tunnel cut for %s", outage), ps.link.Cut, ps.link.Restore},
		{"agent SIGKILLed and started again", func() {
			if err := ps.agent.Kill(); err != nil {
				t.Fatal(err)
			}
		}, func() {
			if err := ps.agent.Start(); err != nil {
				t.Fatalf("%v\n%s", err, ps.agent.LogTail())
			}
		}},
	}
	var table [][]string
	for _, r := range rows {
		rctx, stop := context.WithCancel(ctx)
		probe := &Probe{Config: pc, Interval: 100 * time.Millisecond}
		pb := &Pgbench{Env: ClientEnv(ps.ProxyAddr, ps.HostCAFile, ps.UserCertFile, ps.UserKeyFile), Clients: 4, Rate: cfg.rate, Slice: 2 * time.Second}
		done := make(chan struct{}, 2)
		until := time.Now().Add(3*time.Second + outage + 6*time.Second)
		go func() { probe.Run(rctx); done <- struct{}{} }()
		go func() { pb.Run(rctx, until); done <- struct{}{} }()
		time.Sleep(3 * time.Second)
		r.inject()
		time.Sleep(outage)
		// Measured from the start of the healing: an agent's restart
		// counts in full.
		healed := time.Now()
		r.heal()
		var recovered time.Duration
		for {
			if ok, found := probe.FirstOKAfter(healed); found {
				recovered = ok.Sub(healed)
				break
			}
			if time.Since(healed) > 60*time.Second {
				t.Fatalf("%s: no session through the proxy 60s after it healed; probe errors %v\n%s", r.name, probe.Errors(), ps.agent.LogTail())
			}
			time.Sleep(50 * time.Millisecond)
		}
		<-done // pgbench, at until
		stop()
		<-done
		_, delta, err := ledger.Check(ctx)
		for err == nil && delta.Missing != 0 && ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
			var more Totals
			_, more, err = ledger.Check(ctx)
			delta.Missing += more.Missing
			delta.Statements += more.Statements
		}
		if err != nil {
			t.Fatal(err)
		}
		seen := append(TopErrors(probe.Errors(), 2), TopErrors(pb.Errors(), 2)...)
		t.Logf("%s: new sessions again %s after it healed; %d statements, %d without an event; clients saw %v",
			r.name, recovered.Round(time.Millisecond), delta.Statements, delta.Missing, seen)
		if delta.Statements == 0 || delta.Missing != 0 || delta.DuplicateIDs != 0 {
			t.Fatalf("%s: ledger %+v", r.name, delta)
		}
		table = append(table, []string{r.name, strconv.Itoa(delta.Statements), strconv.Itoa(delta.Missing),
			recovered.Round(time.Millisecond).String(), strings.Join(seen, "; ")})
	}
	report.Add("## Through the proxy\n\n`go test ./test/faults -run 'TestProxyPathFaults|TestProxySIGKILLDuringPgbench'`: a broker+proxy process, " +
		"an agent process tunneled to it (listening on no port), pgbench and a probe through the proxy.\n\n" +
		Table([]string{"fault", "statements", "without an event", "new sessions again after healing", "clients saw"}, table))
}
