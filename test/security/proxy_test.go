package security

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
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

	"github.com/tollgate-db/tollgate/agent/tunnel"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/proxy"
	"github.com/tollgate-db/tollgate/test/faults"
)

// remoteDB is the database of the agent that reaches the cluster only
// through the proxy's port: the world's PostgreSQL under another name.
const remoteDB = "pgremote"

// dbToken makes a database join token and returns it with the host CA's
// pin, as `tollgate tokens add --type=db` prints them.
func (w *world) dbToken(t *testing.T, args ...string) (token, pin string) {
	t.Helper()
	out, err := w.tollgate(append([]string{"tokens", "add", "--type=db"}, args...)...)
	if err != nil {
		t.Fatalf("tokens add: %v\n%s", err, out)
	}
	token = strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	for l := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "broker_ca_pin: "); ok {
			pin = v
		}
	}
	if token == "" || pin == "" {
		t.Fatalf("no token or pin in:\n%s", out)
	}
	return token, pin
}

// remoteAgentConfig writes the configuration of an agent on another
// machine: the proxy's address, a join token and the pin, and its
// database; no listening socket, no NATS address.
func (w *world) remoteAgentConfig(t *testing.T, name, token, pin, db string) string {
	t.Helper()
	dir := filepath.Join(w.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	q := strconv.Quote
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
      static_labels: {env: faults}
      tls: {mode: verify-full, ca_cert_file: %s}
log: {level: info}
`, faults.Cluster, q(filepath.Join(dir, "data")), q(w.proxyAddr), q(token), q(pin), db, q(w.pg.Addr()), q(w.pg.ServerCAFile))
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startRemoteAgent starts an agent process that joins through the proxy
// with a fresh token and serves remoteDB through its tunnel; it returns
// once a session through the proxy works.
func (w *world) startRemoteAgent(t *testing.T) {
	t.Helper()
	token, pin := w.dbToken(t)
	cfg := w.remoteAgentConfig(t, "remote-agent", token, pin, remoteDB)
	n := &faults.Node{Name: "remote agent", Bin: tollgateBin, Config: cfg, Log: filepath.Join(w.dir, "remote-agent.log"),
		Ready: func() error { return w.queryVia(remoteDB, w.userCert, w.userKey, "SELECT 'remote agent ready'") }}
	if err := n.Start(); err != nil {
		t.Fatalf("%v\n%s", err, n.LogTail())
	}
	t.Cleanup(func() { _ = n.Stop() })
}

// queryVia runs sql on database db through the proxy's port, as the user
// of cert and key (none when empty).
func (w *world) queryVia(db, cert, key, sql string) error {
	cfg, err := w.pgxVia(db, cert, key)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// pgxVia is a verify-full connection to db (its name the TLS server
// name) through the proxy's port.
func (w *world) pgxVia(db, cert, key string) (*pgx.ConnConfig, error) {
	host, port, _ := strings.Cut(w.proxyAddr, ":")
	dsn := fmt.Sprintf("host=%s port=%s user=%s dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=10", db, port, faults.DBUser, w.hostCA)
	if cert != "" {
		dsn += fmt.Sprintf(" sslcert=%s sslkey=%s", cert, key)
	}
	c, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	c.LookupFunc = func(context.Context, string) ([]string, error) { return []string{host}, nil }
	c.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return c, nil
}

// runAgent runs an agent process on cfg until it exits (at most a
// minute) and returns its error and output.
func runAgent(t *testing.T, cfg string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, tollgateBin, "start", "--config", cfg).CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("still running after a minute")
	}
	return string(out), err
}

// An agent joining through the proxy with a wrong, expired or already
// used token is refused and gets no route; one given a wrong CA pin
// refuses the broker and does not even spend its token on it.
func TestProxyAgentJoinRefused(t *testing.T) {
	w := newWorld(t)
	// Each attempt's database: it must not come online.
	offline := func(t *testing.T, db string) {
		t.Helper()
		if err := w.queryVia(db, w.userCert, w.userKey, "SELECT 'refused agent'"); err == nil {
			t.Fatalf("a session to %s through the proxy worked", db)
		}
		if w.logged("refused agent") {
			t.Fatal("a statement reached PostgreSQL through a refused agent")
		}
	}
	mustFail := func(t *testing.T, cfg, want string) {
		t.Helper()
		out, err := runAgent(t, cfg)
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("agent: %v, want a failure saying %q:\n%s", err, want, out)
		}
		t.Logf("the agent: %v; its last line: %s", err, lastLine(out))
	}
	_, pin := w.dbToken(t)
	// Tokens live a minute at least: this one is made first and used
	// last, once it expired.
	expiring, _ := w.dbToken(t, "--ttl=1m")
	expiresAt := time.Now().Add(time.Minute)

	t.Run("WrongToken", func(t *testing.T) {
		mustFail(t, w.remoteAgentConfig(t, "wrong-token", "tg-join-0000000000000000000000000000", pin, "pgwrongtoken"), "token")
		offline(t, "pgwrongtoken")
	})
	t.Run("ReusedToken", func(t *testing.T) {
		token, pin := w.dbToken(t)
		// The token's first use, by a host that joins at the API.
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, _ := api.EncodePublicKey(k.Public())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := w.apiClient(nil).Join(ctx, api.JoinRequest{Token: token, HostID: "first-host", PublicKey: pub}); err != nil {
			t.Fatalf("first join: %v", err)
		}
		mustFail(t, w.remoteAgentConfig(t, "reused-token", token, pin, "pgreused"), "already used")
		offline(t, "pgreused")
	})
	t.Run("WrongCAPin", func(t *testing.T) {
		token, _ := w.dbToken(t)
		// Another cluster's pin: the agent must take the broker for an
		// impostor and keep its token from it.
		other, err := ca.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		otherCA, err := other.Cert(ca.Host)
		if err != nil {
			t.Fatal(err)
		}
		mustFail(t, w.remoteAgentConfig(t, "wrong-pin", token, api.Fingerprint(otherCA), "pgwrongpin"), "broker_ca_pin")
		offline(t, "pgwrongpin")
		// The token was never sent: it still joins a host.
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, _ := api.EncodePublicKey(k.Public())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := w.apiClient(nil).Join(ctx, api.JoinRequest{Token: token, HostID: "after-wrong-pin", PublicKey: pub}); err != nil {
			t.Fatalf("the token the agent with a wrong pin held no longer joins (was it sent?): %v", err)
		}
	})
	t.Run("ExpiredToken", func(t *testing.T) {
		time.Sleep(time.Until(expiresAt.Add(2 * time.Second)))
		mustFail(t, w.remoteAgentConfig(t, "expired-token", expiring, pin, "pgexpired"), "token")
		offline(t, "pgexpired")
	})
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// joinHost joins a host at the API with a fresh token, as an agent on
// another machine does, and returns its host certificate: a genuine
// member of the cluster, but only an agent.
func (w *world) joinHost(t *testing.T, hostID string, names ...string) tls.Certificate {
	t.Helper()
	cert, err := w.tryJoinHost(t, hostID, names...)
	if err != nil {
		t.Fatalf("join %s: %v", hostID, err)
	}
	return cert
}

// tryJoinHost is joinHost that returns the broker's refusal.
func (w *world) tryJoinHost(t *testing.T, hostID string, names ...string) (tls.Certificate, error) {
	t.Helper()
	token, _ := w.dbToken(t)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := api.EncodePublicKey(k.Public())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := w.apiClient(nil).Join(ctx, api.JoinRequest{Token: token, HostID: hostID, Hosts: names, PublicKey: pub})
	if err != nil {
		return tls.Certificate{}, err
	}
	return hostCertificate(t, c.CertPEM, k), nil
}

// issueHost is a host certificate for names straight from the host CA,
// past the broker's checks.
func (w *world) issueHost(t *testing.T, hostID string, names ...string) tls.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, certPEM, err := w.cas.IssueHost(k.Public(), hostID, names, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return hostCertificate(t, string(certPEM), k)
}

// hostCertificate is the broker's answer with the key it certifies.
func hostCertificate(t *testing.T, certPEM string, k *ecdsa.PrivateKey) tls.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		t.Fatal("no host certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: k, Leaf: leaf}
}

// foreignCert is a certificate with common name cn from a CA of its own,
// not the cluster's.
func foreignCert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "foreign CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, k.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: k}
}

// dialALPN opens TLS to the proxy's port with the application protocol
// alpn, presenting cert (none when nil) and trusting the host CA.
func (w *world) dialALPN(t *testing.T, alpn string, cert *tls.Certificate) (*tls.Conn, error) {
	t.Helper()
	hostCA, err := w.cas.Cert(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(hostCA)
	host, _, _ := net.SplitHostPort(w.proxyAddr)
	tc := &tls.Config{RootCAs: roots, ServerName: host, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: tc}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", w.proxyAddr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// proxyIdentity is a certificate as a proxy of the cluster holds one
// (common name proxy.PeerCommonName, from the host CA): the control that
// shows a forward with the right identity does reach the agent.
func (w *world) proxyIdentity(t *testing.T) tls.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _, err := w.cas.IssueHost(k.Public(), ca.ProxyHostID, []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: k, Leaf: leaf}
}

// Only another proxy of the cluster may forward a database session to the
// proxy (ALPN tollgate-peer/1): a joined agent's host certificate, a
// user's, one from another CA with the proxies' common name, or none,
// reach no agent through it. Only a host of the cluster may open the
// event relay (ALPN tollgate-events/1).
func TestProxyPeerAndEventRelayIdentity(t *testing.T) {
	w := newWorld(t)
	w.startRemoteAgent(t)
	agentCert := w.joinHost(t, "rogue-agent")
	user := loadPair(t, w.userCert, w.userKey)
	foreignProxy := foreignCert(t, ca.ProxyHostID)
	hostCA, err := w.cas.Cert(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(hostCA)

	// forwarded says whether a TLS session to remoteDB, with the user's
	// certificate, completes inside a peer connection opened with cert:
	// that is, whether the proxy handed the connection to the agent.
	forwarded := func(t *testing.T, cert *tls.Certificate) bool {
		outer, err := w.dialALPN(t, proxy.PeerALPN, cert)
		if err != nil {
			return false
		}
		defer outer.Close()
		_ = outer.SetDeadline(time.Now().Add(10 * time.Second))
		// A proxy names the client and the database before the client's
		// bytes, as proxies forward to each other.
		if err := tunnel.WritePreamble(outer, tunnel.Preamble{ClientAddr: "203.0.113.7:5432", ServerName: remoteDB}); err != nil {
			return false
		}
		// The proxy says 'Y' when it holds the database's tunnel.
		var yes [1]byte
		if _, err := io.ReadFull(outer, yes[:]); err != nil || yes[0] != 'Y' {
			return false
		}
		inner := tls.Client(outer, &tls.Config{RootCAs: roots, ServerName: remoteDB, Certificates: []tls.Certificate{*user}, MinVersion: tls.VersionTLS13})
		if inner.Handshake() != nil {
			return false
		}
		// TLS 1.3 lets the client finish before the server has checked
		// it: the agent's first record says whether it took us.
		_ = inner.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = inner.Read(make([]byte, 1))
		var ne net.Error
		return err == nil || (errors.As(err, &ne) && ne.Timeout())
	}
	t.Run("PeerControl", func(t *testing.T) {
		c := w.proxyIdentity(t)
		if !forwarded(t, &c) {
			t.Fatal("a forward with a proxy's certificate did not reach the agent: the test could not see an attack work")
		}
	})
	for name, cert := range map[string]*tls.Certificate{"PeerAsAgent": &agentCert, "PeerAsUser": user, "PeerForeignCA": &foreignProxy, "PeerNoCertificate": nil} {
		t.Run(name, func(t *testing.T) {
			if forwarded(t, cert) {
				t.Fatal("the proxy forwarded a peer connection without a proxy's identity")
			}
		})
	}

	// relayed says whether the event relay, opened with cert, passes the
	// NATS server's INFO on.
	relayed := func(t *testing.T, cert *tls.Certificate) bool {
		c, err := w.dialALPN(t, natsserver.ProxyALPN, cert)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 4)
		_, err = io.ReadFull(c, b)
		return err == nil && string(b) == "INFO"
	}
	t.Run("EventsControl", func(t *testing.T) {
		if !relayed(t, &agentCert) {
			t.Fatal("a host of the cluster got no INFO from the event relay: the test could not see an attack work")
		}
	})
	for name, cert := range map[string]*tls.Certificate{"EventsAsUser": user, "EventsForeignCA": &foreignProxy, "EventsNoCertificate": nil} {
		t.Run(name, func(t *testing.T) {
			if relayed(t, cert) {
				t.Fatal("the event relay answered a connection without a host certificate of the cluster")
			}
		})
	}
}

// A client reaches a database through the proxy only with a valid user
// certificate, which the agent checks (the proxy only routes): without
// one, with another CA's, with a host's, in plain text, or naming a
// database that does not exist, no statement reaches PostgreSQL; and the
// proxy answers nothing but its SSLRequest 'S' before the ClientHello.
func TestProxyDatabaseNeedsUserCertificate(t *testing.T) {
	w := newWorld(t)
	w.startRemoteAgent(t)
	dir := t.TempDir()
	writePair := func(name string, c tls.Certificate) (string, string) {
		var certPEM []byte
		for _, der := range c.Certificate {
			certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		cf, kf := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		if err := os.WriteFile(cf, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
			t.Fatal(err)
		}
		return cf, kf
	}
	// The control: the user's own certificate works through the proxy.
	if err := w.queryVia(remoteDB, w.userCert, w.userKey, "SELECT 'proxy control'"); err != nil || !w.logged("proxy control") {
		t.Fatalf("the user's own session through the proxy: %v", err)
	}
	foreignCF, foreignKF := writePair("foreign", foreignCert(t, faults.TollgateUser))
	hostCF, hostKF := writePair("host", w.joinHost(t, "some-agent"))
	for _, c := range []struct{ name, cert, key string }{
		{"NoCertificate", "", ""},
		{"ForeignCA", foreignCF, foreignKF},
		{"HostCertificate", hostCF, hostKF},
	} {
		t.Run(c.name, func(t *testing.T) {
			marker := "proxy attack " + c.name
			if err := w.queryVia(remoteDB, c.cert, c.key, "SELECT '"+marker+"'"); err == nil {
				t.Fatal("a session without a valid user certificate worked through the proxy")
			}
			if w.logged(marker) {
				t.Fatal("its statement reached PostgreSQL")
			}
		})
	}
	t.Run("UnknownDatabase", func(t *testing.T) {
		if err := w.queryVia("nosuchdb", w.userCert, w.userKey, "SELECT 'proxy attack unknown'"); err == nil {
			t.Fatal("a session to a database that does not exist worked through the proxy")
		}
		if w.logged("proxy attack unknown") {
			t.Fatal("its statement reached PostgreSQL")
		}
	})

	// answer sends b to the proxy's port and returns all it answers until
	// it closes the connection.
	answer := func(t *testing.T, b []byte) []byte {
		t.Helper()
		c, err := net.DialTimeout("tcp", w.proxyAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the proxy kept a connection it should refuse open (answered %q)", got)
		}
		return got
	}
	startup := func(params ...string) []byte {
		body := []byte{0, 3, 0, 0}
		for _, p := range params {
			body = append(append(body, p...), 0)
		}
		body = append(body, 0)
		n := len(body) + 4
		return append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, body...)
	}
	sslRequest := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}
	query := func(sql string) []byte {
		n := len(sql) + 5
		return append(append([]byte{'Q', byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, sql...), 0)
	}
	t.Run("Plaintext", func(t *testing.T) {
		got := answer(t, append(startup("user", faults.DBUser, "database", "postgres"), query("SELECT 'proxy attack plaintext'")...))
		if len(got) > 0 {
			t.Fatalf("the proxy answered a plain-text startup with %q", got)
		}
	})
	t.Run("PlaintextAfterSSLRequest", func(t *testing.T) {
		got := answer(t, append(append(sslRequest, startup("user", faults.DBUser, "database", "postgres")...), query("SELECT 'proxy attack after S'")...))
		if string(got) != "S" {
			t.Fatalf("the proxy answered %q to plain text after its 'S'; want the 'S' alone", got)
		}
	})
	if w.logged("proxy attack plaintext") || w.logged("proxy attack after S") {
		t.Fatal("a plain-text statement reached PostgreSQL")
	}
}

// An agent cannot take another agent's database through the proxy: a
// joined host whose host certificate names the database registered to the
// remote agent (and the world's own), and whose tunnel announces them, is
// not acknowledged for them, gets none of their sessions, and PRESENCE
// routes them to no one but their agents. It keeps its own database.
func TestProxyRouteTheft(t *testing.T) {
	w := newWorld(t)
	w.startRemoteAgent(t)
	const own = "pgrogue"
	victims := []string{remoteDB, faults.PGName}
	// The broker certifies no database name another host serves, at join
	// or at renewal: such a certificate would pass the users' verify-full.
	for _, d := range victims {
		if _, err := w.tryJoinHost(t, "rogue-agent", own, d); err == nil || !strings.Contains(err.Error(), "database \""+d+"\" is served by host") {
			t.Errorf("join naming %s, which another agent serves: %v, want a refusal naming it", d, err)
		}
	}
	rogueOwn := w.joinHost(t, "rogue-agent", own)
	rk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rpub, _ := api.EncodePublicKey(rk.Public())
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := w.apiClient(&rogueOwn).AgentRenew(rctx, api.RenewHostRequest{Hosts: []string{own, remoteDB}, PublicKey: rpub})
	rcancel()
	if err == nil || !strings.Contains(err.Error(), "database \""+remoteDB+"\" is served by host") {
		t.Errorf("renewal naming %s, which another agent serves: %v, want a refusal naming it", remoteDB, err)
	}
	// A certificate naming them all the same (as one certified before
	// they were registered would): the proxy's own check of STATE is
	// what keeps their routes.
	rogue := w.issueHost(t, "rogue-agent", remoteDB, faults.PGName, own)
	hostCA, err := w.cas.Cert(ca.Host)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(hostCA)
	host, _, _ := net.SplitHostPort(w.proxyAddr)
	tl, err := tunnel.Listen(tunnel.Options{Addrs: []string{w.proxyAddr}, HostID: "rogue-agent", Databases: append(victims, own),
		TLS: &tls.Config{Certificates: []tls.Certificate{rogue}, RootCAs: roots, ServerName: host}})
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	stolen := make(chan string, 100)
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			stolen <- c.RemoteAddr().String()
			c.Close()
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for len(tl.Connected()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the rogue agent's tunnel never opened (its own database should have been acknowledged)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for addr, dbs := range tl.Connected() {
		for _, d := range victims {
			if slices.Contains(dbs, d) {
				t.Errorf("the proxy at %s acknowledged %s, registered to another agent, for the rogue's tunnel", addr, d)
			}
		}
	}
	for i := range 5 {
		if err := w.queryVia(remoteDB, w.userCert, w.userKey, fmt.Sprintf("SELECT 'route theft %d'", i)); err != nil {
			t.Fatalf("session %d to %s with a rogue tunnel announcing it: %v", i, remoteDB, err)
		}
		// The world's own database has no tunnel (its agent listens
		// itself): through the proxy it is offline, not the rogue's.
		if err := w.queryVia(faults.PGName, w.userCert, w.userKey, fmt.Sprintf("SELECT 'route theft %d'", i)); err == nil {
			t.Fatalf("session %d to %s through the proxy worked: whose tunnel?", i, faults.PGName)
		}
	}
	select {
	case from := <-stolen:
		t.Fatalf("the rogue agent was given a session (from %s)", from)
	default:
	}
	// PRESENCE, as the broker reads it: the rogue's own database shows
	// its route is announced (the control), the others name only their
	// agents.
	_, js, _ := w.as(natsserver.Broker)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := presence.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	view, err := presence.Watch(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	for !view.Online(own) {
		if ctx.Err() != nil {
			t.Fatal("the rogue's own database never had a route in PRESENCE: the test could not see a stolen one")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, d := range victims {
		for _, r := range view.Routes(d) {
			if r.HostID == "rogue-agent" {
				t.Errorf("PRESENCE routes %s to the rogue agent: %+v", d, r)
			}
		}
	}
	if !view.Online(remoteDB) {
		t.Errorf("PRESENCE lost the route of %s to its agent", remoteDB)
	}
}
