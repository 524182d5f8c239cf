// Package natsconfig holds the checks of the NATS cluster configurations
// beside it: nats-server reads each with the certificates it names and
// Tollgate's authorization block, and gets the permissions Tollgate's parts
// are given by the embedded server.
package natsconfig

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
	"math/big"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/test/harness"
)

// install lays the files out as the configurations expect them in
// /etc/nats/, under dir: the node certificates, the CA and the block
// `tollgate auth nats` prints.
func install(t *testing.T, dir string) *natsserver.Credentials {
	t.Helper()
	ca := harness.NewCA(t, "tollgate nats CA")
	write := func(name string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("tls/ca.crt", ca.CertPEM, 0o644)
	for n := 1; n <= 3; n++ {
		kp := ca.IssueServer(t, fmt.Sprintf("nats-%d", n))
		write(fmt.Sprintf("tls/nats-%d.crt", n), kp.CertPEM, 0o644)
		write(fmt.Sprintf("tls/nats-%d.key", n), kp.KeyPEM, 0o600)
	}
	creds, err := natsserver.LoadOrCreateCredentials(filepath.Join(dir, "seeds"))
	if err != nil {
		t.Fatal(err)
	}
	write("tollgate-authorization.conf", []byte(creds.ServerConfig()), 0o644)
	for n := 1; n <= 3; n++ {
		name := fmt.Sprintf("nats-%d.conf", n)
		conf, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(conf), `"/etc/nats/`, `"`+dir+`/`)
		s = strings.ReplaceAll(s, `"/var/lib/nats"`, `"`+filepath.Join(dir, "store")+`"`)
		write(name, []byte(s), 0o644)
	}
	return creds
}

func TestClusterConfigs(t *testing.T) {
	dir := t.TempDir()
	creds := install(t, dir)
	for n := 1; n <= 3; n++ {
		name := fmt.Sprintf("nats-%d", n)
		t.Run(name, func(t *testing.T) {
			opts, err := server.ProcessConfigFile(filepath.Join(dir, name+".conf"))
			if err != nil {
				t.Fatal(err)
			}
			if opts.ServerName != name || opts.Port != 4222 || !opts.JetStream || opts.Cluster.Name != "tollgate" || opts.Cluster.Port != 6222 {
				t.Errorf("server %q port %d jetstream %v cluster %q:%d", opts.ServerName, opts.Port, opts.JetStream, opts.Cluster.Name, opts.Cluster.Port)
			}
			if opts.TLSConfig == nil {
				t.Error("clients are not served over TLS")
			}
			if opts.Cluster.TLSConfig == nil || opts.Cluster.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
				t.Error("routes do not require a certificate of the CA")
			}
			var routes []string
			for _, r := range opts.Routes {
				routes = append(routes, r.Host)
			}
			slices.Sort(routes)
			if !reflect.DeepEqual(routes, []string{"nats-1:6222", "nats-2:6222", "nats-3:6222"}) {
				t.Errorf("routes %v", routes)
			}
			if !strings.HasPrefix(opts.HTTPHost, "127.") {
				t.Errorf("monitoring on %q, want loopback", opts.HTTPHost)
			}

			// Every part with exactly its permissions, nobody else, no
			// anonymous fallback.
			if len(opts.Users) != 0 || opts.NoAuthUser != "" || opts.Authorization != "" || opts.Username != "" {
				t.Errorf("other ways in: users %d no_auth_user %q token %v user %q", len(opts.Users), opts.NoAuthUser, opts.Authorization != "", opts.Username)
			}
			if len(opts.Nkeys) != len(natsserver.Parts) {
				t.Fatalf("%d nkey users, want %d", len(opts.Nkeys), len(natsserver.Parts))
			}
			for _, p := range natsserver.Parts {
				i := slices.IndexFunc(opts.Nkeys, func(u *server.NkeyUser) bool { return u.Nkey == creds.PublicKey(p) })
				if i < 0 {
					t.Errorf("%s: no user", p)
					continue
				}
				got, want := opts.Nkeys[i].Permissions, natsserver.Permissions(p)
				if !samePerm(got.Publish, want.Publish) || !samePerm(got.Subscribe, want.Subscribe) {
					t.Errorf("%s: permissions %+v %+v, want %+v %+v", p, got.Publish, got.Subscribe, want.Publish, want.Subscribe)
				}
			}

			// The options pass the server's own validation.
			s, err := server.NewServer(opts)
			if err != nil {
				t.Fatal(err)
			}
			s.Shutdown()
		})
	}
}

func samePerm(a, b *server.SubjectPermission) bool {
	if a == nil || b == nil {
		return a == b
	}
	return slices.Equal(a.Allow, b.Allow) && slices.Equal(a.Deny, b.Deny)
}

// TestClusterRuns starts the three servers from the files (on free
// loopback ports, with certificates for 127.0.0.1): the routes join over
// mutual TLS, the broker creates Tollgate's R3 streams, an agent stores an
// audit frame and is refused a state write.
func TestClusterRuns(t *testing.T) {
	dir := t.TempDir()
	creds := install(t, dir)
	ca := harness.NewCA(t, "tollgate nats CA")
	if err := os.WriteFile(filepath.Join(dir, "tls/ca.crt"), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	client, route := freePorts(t, 3), freePorts(t, 3)
	var servers []*server.Server
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	for n := 1; n <= 3; n++ {
		cert, key := nodeCert(t, ca, fmt.Sprintf("nats-%d", n))
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("tls/nats-%d.crt", n)), cert, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("tls/nats-%d.key", n)), key, 0o600); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("nats-%d.conf", n))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		s = strings.Replace(s, "listen: 0.0.0.0:4222", fmt.Sprintf("listen: 127.0.0.1:%d", client[n-1]), 1)
		s = strings.Replace(s, "listen: 0.0.0.0:6222", fmt.Sprintf("listen: 127.0.0.1:%d", route[n-1]), 1)
		s = strings.Replace(s, "http: 127.0.0.1:8222", "", 1)
		s = strings.ReplaceAll(s, filepath.Join(dir, "store"), filepath.Join(dir, fmt.Sprintf("store-%d", n)))
		for k := 1; k <= 3; k++ {
			s = strings.Replace(s, fmt.Sprintf("nats-route://nats-%d:6222", k), fmt.Sprintf("nats-route://127.0.0.1:%d", route[k-1]), 1)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(p)
		if err != nil {
			t.Fatal(err)
		}
		opts.NoSigs = true
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, srv)
		go srv.Start()
	}
	for _, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("%s not ready", s.Name())
		}
	}

	connect := func(p natsserver.Part, extra ...nats.Option) *nats.Conn {
		t.Helper()
		opts, err := creds.Options(p)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, nats.RootCAs(filepath.Join(dir, "tls/ca.crt")))
		opts = append(opts, extra...)
		var urls []string
		for _, port := range client {
			urls = append(urls, fmt.Sprintf("tls://127.0.0.1:%d", port))
		}
		nc, err := nats.Connect(strings.Join(urls, ","), opts...)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	if nc, err := nats.Connect(fmt.Sprintf("tls://127.0.0.1:%d", client[0]), nats.RootCAs(filepath.Join(dir, "tls/ca.crt"))); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected")
	}

	broker, err := jetstream.New(connect(natsserver.Broker))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		// Until the cluster has elected its JetStream meta leader; a
		// request made before may go unanswered, so each try is bounded.
		try, cancelTry := context.WithTimeout(ctx, 5*time.Second)
		err := events.EnsureStreams(try, broker, events.StreamOptions{Replicas: 3})
		cancelTry()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("streams on the cluster: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	audit, err := broker.Stream(ctx, events.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if r := audit.CachedInfo().Config.Replicas; r != 3 {
		t.Errorf("AUDIT has %d replicas", r)
	}

	refused := make(chan error, 8)
	agent, err := jetstream.New(connect(natsserver.Agent, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		refused <- err
	})))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Publish(ctx, "audit.tollgate."+events.FrameSubject+".test", []byte("{}")); err != nil {
		t.Errorf("the agent cannot store an audit frame: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	if _, err := agent.Publish(short, "state.user.mallory", []byte("{}")); err == nil {
		t.Error("the agent wrote STATE")
	}
	select {
	case err := <-refused:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("the agent's state write: %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the server did not report the agent's state write as a permissions violation")
	}
	state, err := broker.Stream(ctx, events.StateStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := state.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Errorf("STATE: %v messages, %v", info.State.Msgs, err)
	}
}

// nodeCert is a certificate for node name and 127.0.0.1, for both ends of
// TLS: nats-server presents it to clients and to the routes it dials.
func nodeCert(t *testing.T, ca *harness.CA, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
