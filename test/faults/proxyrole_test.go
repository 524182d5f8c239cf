package faults

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
)

// joinToken makes a join token of typ with the broker's configuration
// and returns it with the pin, checking that the printed configuration
// names section.
func joinToken(t *testing.T, s *Stack, typ, section string) (token, pin string) {
	t.Helper()
	out, err := exec.Command(s.Bin.Tollgate, "--config", s.Config, "tokens", "add", "--type="+typ).CombinedOutput()
	if err != nil {
		t.Fatalf("tokens add --type=%s: %v\n%s", typ, err, out)
	}
	token = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	for l := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "broker_ca_pin: "); ok {
			pin = v
		}
	}
	if pin == "" || !strings.Contains(string(out), "\n  "+section+":\n") || !strings.Contains(string(out), "join_token: "+token) {
		t.Fatalf("tokens add --type=%s printed no %s section with the token and pin:\n%s", typ, section, out)
	}
	return token, pin
}

// A proxy process without the broker (the proxy role), joined with a
// proxy token, in front of a broker process whose own proxy the agent
// cannot reach: the agent, configured with the separate proxy's address
// only, joins, reaches the event plane and tunnels through it; psql
// through it reaches PostgreSQL with every statement audited; tg logs in
// through it (the API, spliced whole to the broker); and the proxy's
// identity on the event plane writes PRESENCE but not STATE.
func TestProxyWithoutBroker(t *testing.T) {
	bin := binaries(t)
	s := &Stack{Dir: t.TempDir(), Bin: bin}
	s.DataDir = filepath.Join(s.Dir, "data")
	ps := &proxyStack{Stack: s, embedded: true}
	// The broker announces a link's address, closed below: the agent
	// finds the broker's own proxy in presence but cannot reach it, so
	// its only tunnel is to the separate proxy.
	ps.startBroker(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A db token does not make a proxy.
	dbToken, pin := joinToken(t, s, "db", "db_service")
	q := strconv.Quote
	proxyAddr := freeAddr(t)
	proxyCfg := filepath.Join(s.Dir, "proxy.yaml")
	proxyData := filepath.Join(s.Dir, "proxy-data")
	writeProxy := func(token string) {
		yaml := fmt.Sprintf(`cluster_name: %s
data_dir: %s
broker: {enabled: false}
proxy:
  enabled: true
  listen: %s
  public_addr: %s
  broker_addr: %s
  join_token: %s
  broker_ca_pin: %s
log: {level: info}
`, Cluster, q(proxyData), q(proxyAddr), q(proxyAddr), q(s.ProxyAddr), q(token), q(pin))
		if err := os.WriteFile(proxyCfg, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeProxy(dbToken)
	out, err := exec.CommandContext(ctx, bin.Tollgate, "start", "--config", proxyCfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "a token of type db cannot join a host of type proxy") {
		t.Fatalf("a proxy joining with a db token: %v\n%s", err, out)
	}
	proxyToken, _ := joinToken(t, s, "proxy", "proxy")
	writeProxy(proxyToken)
	kv, err := presence.Open(ctx, s.JS)
	if err != nil {
		t.Fatal(err)
	}
	if ps.view, err = presence.Watch(ctx, kv); err != nil {
		t.Fatal(err)
	}
	proxyNode := &Node{Name: "proxy", Bin: bin.Tollgate, Config: proxyCfg, Log: filepath.Join(s.Dir, "proxy.log"),
		Ready: func() error {
			if !slices.ContainsFunc(ps.view.Proxies(), func(p presence.Proxy) bool { return p.Addr == proxyAddr }) {
				return fmt.Errorf("no proxy at %s in presence", proxyAddr)
			}
			return nil
		}}
	if err := proxyNode.Start(); err != nil {
		t.Fatalf("%v\n%s", err, proxyNode.LogTail())
	}
	t.Cleanup(func() { _ = proxyNode.Stop() })
	if b, _ := os.ReadFile(proxyNode.Log); !strings.Contains(string(b), "nats connected through the broker's port") {
		t.Fatalf("the proxy did not reach NATS through the broker's port:\n%s", proxyNode.LogTail())
	}
	joined, err := os.ReadFile(filepath.Join(proxyData, "proxy", "joined", "host.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(joined)
	if blk == nil {
		t.Fatalf("no certificate in the proxy's host.crt:\n%s", joined)
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != ca.ProxyHostID || leaf.VerifyHostname("127.0.0.1") != nil {
		t.Fatalf("the proxy's certificate: common name %q, names %v %v", leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses)
	}
	ps.link.Close()

	// The agent: the separate proxy's address, a db token and the pin.
	agentToken, _ := joinToken(t, s, "db", "db_service")
	ps.agentCfg = filepath.Join(s.Dir, "agent.yaml")
	yaml := fmt.Sprintf(`cluster_name: %s
data_dir: %s
broker: {enabled: false}
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
log: {level: info}
`, Cluster, q(filepath.Join(s.Dir, "agent-data")), q(proxyAddr), q(agentToken), q(pin), PGName, q(s.PG.Addr()), q(s.PG.ServerCAFile))
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
		t.Fatalf("%v\nproxy:\n%s", err, proxyNode.LogTail())
	}
	t.Cleanup(func() { _ = ps.agent.Stop() })
	for _, r := range ps.view.Routes(PGName) {
		if r.ProxyAddr != proxyAddr {
			t.Fatalf("a route through %s (%s): the agent reached another proxy than the separate one", r.Proxy, r.ProxyAddr)
		}
	}

	env := ClientEnv(proxyAddr, s.HostCAFile, s.UserCertFile, s.UserKeyFile)
	psql := exec.CommandContext(ctx, "psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", "select 'through the separate proxy'",
		"-c", "select count(*) from pgbench_branches")
	psql.Env = env
	if out, err := psql.CombinedOutput(); err != nil || !strings.Contains(string(out), "through the separate proxy") {
		t.Fatalf("psql through the separate proxy: %v\n%s\nproxy:\n%s", err, out, proxyNode.LogTail())
	}
	pb := exec.CommandContext(ctx, "pgbench", "-n", "-c", "2", "-T", "3", "postgres")
	pb.Env = env
	if out, err := pb.CombinedOutput(); err != nil {
		t.Fatalf("pgbench through the separate proxy: %v\n%s", err, out)
	}
	l := &Ledger{JS: s.JS, PG: s.PG}
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
	t.Logf("through the separate proxy: %d statements in PostgreSQL's log, %d events, %d without an event", now.Statements, now.Events, now.Missing)
	if now.Statements < 50 || now.Missing != 0 || now.DuplicateIDs != 0 || now.Gaps != 0 {
		t.Fatalf("ledger %+v", now)
	}

	// A refusal of the separate proxy's own is stored, through its
	// identity on the event plane.
	plain, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	refusedFrom := plain.LocalAddr().String()
	_, _ = plain.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	_ = plain.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, plain)
	plain.Close()
	for !refusalStored(t, ctx, s.JS, refusedFrom) {
		if ctx.Err() != nil {
			t.Fatalf("no db.session.rejected event for %s\nproxy:\n%s", refusedFrom, proxyNode.LogTail())
		}
		time.Sleep(250 * time.Millisecond)
	}

	// tg login through the separate proxy: the API's TLS ends at the
	// broker, which authenticates the identity it issues.
	tgBin := filepath.Join(s.Dir, "tg")
	if out, err := exec.Command("go", "build", "-o", tgBin, "github.com/tollgate-db/tollgate/cmd/tg").CombinedOutput(); err != nil {
		t.Fatalf("go build tg: %v\n%s", err, out)
	}
	out, err = exec.Command(bin.Tollgate, "--config", s.Config, "users", "add", "carol", "--roles=access", "--db-users=*", "--db-names=*").CombinedOutput()
	if err != nil {
		t.Fatalf("users add: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`--invite=(\S+) --ca-pin=(sha256:[0-9a-f]{64})`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no invite in:\n%s", out)
	}
	home := t.TempDir()
	tg := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, tgBin, args...)
		cmd.Env = append(childEnv(), "HOME="+home, "TG_PASSWORD=correct horse battery staple 7")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := tg("login", "--proxy="+proxyAddr, "--user=carol", "--invite="+m[1], "--ca-pin="+m[2]); err != nil {
		t.Fatalf("tg login through the separate proxy: %v\n%s\nproxy:\n%s", err, out, proxyNode.LogTail())
	}
	if out, err := tg("db", "ls"); err != nil || !strings.Contains(out, PGName) || !strings.Contains(out, "online") {
		t.Fatalf("tg db ls through the separate proxy: %v\n%s", err, out)
	}

	// The proxy's identity on the event plane, as the broker's proxy
	// signs it in for the proxy's certificate: PRESENCE yes, STATE no.
	dir := filepath.Join(proxyData, "proxy", "joined")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "host.crt"), filepath.Join(dir, "host.key"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(dir, "host-ca.crt"))
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("host CA: %v", err)
	}
	errs := make(chan error, 8)
	nc, err := natsserver.ConnectViaProxy([]string{s.ProxyAddr}, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: roots}, nil,
		nats.CustomInboxPrefix(natsserver.Proxy.InboxPrefix()), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	pkv, err := js.KeyValue(ctx, "PRESENCE")
	if err != nil {
		t.Fatalf("the proxy's identity binds PRESENCE: %v", err)
	}
	if _, err := pkv.Put(ctx, "test.proxy-identity", []byte(`{}`)); err != nil {
		t.Fatalf("the proxy's identity writes PRESENCE: %v", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = js.Publish(pctx, "state.user.mallory", []byte(`{"type":"user.create"}`))
	pcancel()
	if err == nil {
		t.Fatal("the proxy's identity appended to STATE")
	}
	select {
	case e := <-errs:
		if !errors.Is(e, nats.ErrPermissionViolation) && !strings.Contains(e.Error(), "Permissions Violation") {
			t.Fatalf("STATE refused with %v, the server said %v (want a permissions violation)", err, e)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("STATE refused with %v but the server reported no permissions violation", err)
	}
}

// refusalStored says whether AUDIT holds a db.session.rejected event for
// a connection from client (host:port).
func refusalStored(t *testing.T, ctx context.Context, js jetstream.JetStream, client string) bool {
	t.Helper()
	st, err := js.Stream(ctx, "AUDIT")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for seq := uint64(0); seq < info.State.LastSeq; {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			seq = md.Sequence.Stream
			err = events.SplitEvents(m.Data(), func(raw []byte) error {
				var ev struct {
					Type       string `json:"type"`
					ClientAddr string `json:"client_addr"`
					Reason     string `json:"reason"`
				}
				if err := json.Unmarshal(raw, &ev); err != nil {
					return err
				}
				found = found || (ev.Type == "db.session.rejected" && ev.ClientAddr == client && ev.Reason == events.RejectNotTLS)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if n == 0 {
			break
		}
	}
	return found
}
