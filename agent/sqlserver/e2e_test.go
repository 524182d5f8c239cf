package sqlserver_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/awsiam"
	"github.com/tollgate-db/tollgate/agent/kerberos"
	"github.com/tollgate-db/tollgate/agent/kerberos/kdctest"
	"github.com/tollgate-db/tollgate/agent/sqlserver"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/test/tdsserver"
)

const (
	iamKey = "AKIAEXAMPLEIAMTEST01"
	spn    = "MSSQLSvc/sql.tollgate.test:1433"
	realm  = "TOLLGATE.TEST"
)

// stack is a real MIT KDC, the strict TDS server verifying Kerberos with
// the SPN's keytab, and the agenttest stack with an agent with the SQL
// Server engine logging in with PKINIT as ms1, and a local plaintext
// tunnel to the agent like tg proxy db --tunnel.
type stack struct {
	*agenttest.Stack
	kdc    *kdctest.KDC
	tds    *tdsserver.Server
	tunnel string
	roots  *tls.Config
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
	s := &stack{Stack: agenttest.New(t, agenttest.Options{CAs: authorities(t),
		User: identity.Identity{User: "alice@example.com", Roles: []string{"dev"}}})}
	cas := s.CAs
	clientCA := s.DBClientCA(t)
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
	certPEM, keyPEM, _, err := cas.IssueDBServer([]string{"localhost"}, time.Hour)
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
	ts, err := tdsserver.Listen(tdsserver.Config{
		TLS: &tls.Config{Certificates: []tls.Certificate{srvCert}}, Keytab: kt, KerberosReply: true,
		ForceEncryption: true, Logger: agenttest.Quiet(), Password: o.iam, MaxPassword: 4096,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.Close() })
	s.kdc, s.tds = kdc, ts
	s.roots = s.TLS(t, "ms1")

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
	dbTLS := config.DatabaseTLS{Mode: "verify-full", CACertFile: agenttest.WriteFile(t, s.Dir, "db-ca.crt", dbCA)}
	if o.tls != nil {
		o.tls(&dbTLS)
	}
	_, port, _ := net.SplitHostPort(ts.Addr())
	krb := kerberos.NewRegistry(kerberos.Options{Issue: cas.IssueDBClient, DBClientCA: clientCA, Dir: filepath.Join(s.Dir, "krb5"), Logger: agenttest.Quiet()})
	t.Cleanup(func() { krb.Close() })
	iam := awsiam.NewRegistry(awsiam.Options{Credentials: credentials.NewStaticCredentialsProvider(iamKey, "iam-test-secret", "")})
	eng, err := sqlserver.New(sqlserver.Options{Auth: &sqlserver.ConfigAuth{Kerberos: krb, IAM: iam}, Logger: agenttest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(t, agenttest.Agent{State: o.life, Roles: agenttest.Role([]string{"alice", "carol"}, nil, ""), ServerConfig: agent.ServerConfig{
		Databases: []config.Database{{Name: "ms1", Protocol: "sqlserver", URI: "localhost:" + port, AuditMode: o.mode,
			StaticLabels: map[string]string{"env": "test"}, TLS: dbTLS, AD: ad, AWS: aws}},
		// The engine logs in with Kerberos or IAM, never a db-client
		// certificate.
		ClientCert: func(context.Context, agent.DatabaseInfo, string) (*tls.Certificate, error) {
			return nil, errors.New("unused")
		},
		Engines: map[string]agent.Engine{"sqlserver": eng},
	}})
	s.tunnel = agenttest.Tunnel(t, s.Addr, s.roots)
	return s
}
