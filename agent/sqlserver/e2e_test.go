package sqlserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/awsiam"
	"github.com/tollgate-db/tollgate/agent/kerberos"
	"github.com/tollgate-db/tollgate/agent/kerberos/kdctest"
	"github.com/tollgate-db/tollgate/agent/sqlserver"
	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/test/harness"
	"github.com/tollgate-db/tollgate/test/tdsserver"
)

const (
	iamKey = "AKIAEXAMPLEIAMTEST01"
	spn    = "MSSQLSvc/sql.tollgate.test:1433"
	realm  = "TOLLGATE.TEST"
)

// stack is a real MIT KDC, the strict TDS server verifying Kerberos with
// the SPN's keytab, an embedded JetStream with the publisher, an agent with
// the SQL Server engine logging in with PKINIT, and a local plaintext
// tunnel to the agent like tg proxy db --tunnel.
type stack struct {
	kdc    *kdctest.KDC
	tds    *tdsserver.Server
	js     jetstream.JetStream
	nats   *harness.NATSServer
	cas    *ca.Authorities
	agent  string
	tunnel string
	user   tls.Certificate
	roots  *tls.Config
	dir    string
}

type stackOptions struct {
	mode string
	// keytab logs carol in with a keytab instead of PKINIT.
	keytab bool
	// iam puts the database behind "RDS Proxy": the TDS server takes SQL
	// logins whose password is checked by iamPassword, and the agent signs
	// IAM tokens with static credentials.
	iam func(user, password string) error
	// life, when set, is the control-plane state a lifecycle reads to end
	// sessions.
	life agent.StateSource
	// ad edits the database's ad: block.
	ad func(*config.AD)
	// tls edits the database's tls: block.
	tls func(*config.DatabaseTLS)
}

// sharedCAs are the authorities of every stack: making their keys is the
// slowest part of a stack, and nothing here depends on them being fresh.
var (
	casOnce   sync.Once
	sharedCAs *ca.Authorities
	casErr    error
	casDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if casDir != "" {
		os.RemoveAll(casDir)
	}
	os.Exit(code)
}

func authorities(t *testing.T) *ca.Authorities {
	t.Helper()
	casOnce.Do(func() {
		if casDir, casErr = os.MkdirTemp("", "sqlserver-ca-"); casErr == nil {
			sharedCAs, casErr = ca.Open(casDir)
		}
	})
	if casErr != nil {
		t.Fatal(casErr)
	}
	return sharedCAs
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	dir := t.TempDir()
	cas := authorities(t)
	clientCA, err := cas.CertPEM(ca.DBClient)
	if err != nil {
		t.Fatal(err)
	}
	kdc := kdctest.Start(t, kdctest.Options{Realm: realm, ClientCAPEM: clientCA})
	kdc.AddPKINITUser(t, "alice")
	kdc.AddPKINITUser(t, "bob")
	carolKeytab := kdc.AddUser(t, "carol")
	kt, err := keytab.Load(kdc.AddService(t, spn))
	if err != nil {
		t.Fatal(err)
	}
	// SQL Server's certificate comes from the db CA, which the agent
	// trusts through tls.ca_cert_file.
	certPEM, keyPEM, casPEM, err := cas.IssueDBServer([]string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	dbCA, err := cas.CertPEM(ca.DB)
	if err != nil {
		t.Fatal(err)
	}
	_ = casPEM
	ts, err := tdsserver.Listen(tdsserver.Config{
		TLS: &tls.Config{Certificates: []tls.Certificate{srvCert}}, Keytab: kt, KerberosReply: true,
		ForceEncryption: true, Logger: quiet(), Password: o.iam, MaxPassword: 4096,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.Close() })

	ns := harness.NATS(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(js, "test", events.WithAckTimeout(time.Second), events.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	hostKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hostCert, _, err := cas.IssueHost(hostKey.Public(), "agent", []string{"localhost", "ms1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	userKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	userCert, _, err := cas.IssueUser(userKey.Public(), identity.Identity{User: "alice@example.com", Roles: []string{"dev"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{kdc: kdc, tds: ts, js: js, nats: ns, cas: cas, dir: dir,
		user: tls.Certificate{Certificate: [][]byte{userCert.Raw}, PrivateKey: userKey, Leaf: userCert}}
	hostPool, _ := cas.Pool(ca.Host)
	s.roots = &tls.Config{RootCAs: hostPool, ServerName: "ms1", Certificates: []tls.Certificate{s.user}}

	roles, err := access.Parse([]byte(`
kind: role
metadata: {name: dev}
spec:
  allow:
    db_labels: {env: test}
    db_users: [alice, carol]
`))
	if err != nil {
		t.Fatal(err)
	}
	ad := config.AD{Domain: "tollgate.test", SPN: spn, KDCHostName: kdc.KDCHostName(), LDAPCert: kdc.DomainCAFile}
	if o.ad != nil {
		o.ad(&ad)
	}
	if o.keytab {
		ad.KeytabFile = carolKeytab
	}
	var aws config.AWS
	if o.iam != nil {
		ad = config.AD{}
		aws = config.AWS{Region: "eu-west-1", RDSProxy: true}
	}
	dbTLS := config.DatabaseTLS{Mode: "verify-full", CACertFile: writeFile(t, dir, "db-ca.crt", dbCA)}
	if o.tls != nil {
		o.tls(&dbTLS)
	}
	_, port, _ := net.SplitHostPort(ts.Addr())
	krb := kerberos.NewRegistry(kerberos.Options{Issue: cas.IssueDBClient, DBClientCA: clientCA, Dir: filepath.Join(dir, "krb5"), Logger: quiet()})
	t.Cleanup(func() { krb.Close() })
	iam := awsiam.NewRegistry(awsiam.Options{Credentials: credentials.NewStaticCredentialsProvider(iamKey, "iam-test-secret", "")})
	eng, err := sqlserver.New(sqlserver.Options{Auth: &sqlserver.ConfigAuth{Kerberos: krb, IAM: iam}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	userPool, _ := cas.Pool(ca.User)
	var life *agent.Lifecycle
	if o.life != nil {
		life = agent.NewLifecycle(o.life, agent.LifecycleOptions{Interval: 20 * time.Millisecond, Logger: quiet()})
	}
	srv, err := agent.NewServer(agent.ServerConfig{
		Lifecycle: life,
		Cluster:   "test",
		Databases: []config.Database{{Name: "ms1", Protocol: "sqlserver", URI: "localhost:" + port, AuditMode: o.mode,
			StaticLabels: map[string]string{"env": "test"}, TLS: dbTLS, AD: ad, AWS: aws}},
		TLS:       &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{hostCert.Raw}, PrivateKey: hostKey}}},
		UserCAs:   userPool,
		Identify:  identity.FromCertificate,
		Authorize: agent.RoleAuthorizer(func([]string) []access.Role { return roles }),
		Recorder:  pub,
		ClientCert: func(context.Context, agent.DatabaseInfo, string) (*tls.Certificate, error) {
			return nil, errors.New("unused")
		},
		Engines: map[string]agent.Engine{"sqlserver": eng},
		Logger:  quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.agent = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	if life != nil {
		go life.Run(ctx)
	}
	s.tunnel = startTunnel(t, s.agent, s.roots)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = pub.Close(context.Background())
	})
	return s
}

// startTunnel does what tg proxy db --tunnel does for protocols other than
// PostgreSQL: each local plaintext connection is carried to the agent in
// TLS with the user's certificate and the database's name as SNI.
func startTunnel(t *testing.T, agentAddr string, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := tls.Dial("tcp", agentAddr, cfg)
				if err != nil {
					return
				}
				defer up.Close()
				errc := make(chan error, 2)
				go func() { _, err := io.Copy(up, c); _ = up.CloseWrite(); errc <- err }()
				go func() { _, err := io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); errc <- err }()
				<-errc
				timer := time.AfterFunc(5*time.Second, func() { c.Close(); up.Close() })
				<-errc
				timer.Stop()
			}()
		}
	}()
	return ln.Addr().String()
}

func quiet() *slog.Logger {
	if testing.Verbose() && os.Getenv("TG_TEST_LOG") != "" {
		return slog.Default()
	}
	return slog.New(slog.DiscardHandler)
}

// waitAudit polls the stream until cond holds on it.
func (s *stack) waitAudit(t *testing.T, what string, cond func([]map[string]any) bool) []map[string]any {
	t.Helper()
	return agenttest.WaitAudit(t, s.js, what, cond)
}

// The helpers every engine's end-to-end tests share.
var (
	ofType       = agenttest.OfType
	count        = agenttest.Count
	checkGapless = agenttest.CheckGapless
	writeFile    = agenttest.WriteFile
)
