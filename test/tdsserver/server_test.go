package tdsserver_test

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"
	mssql "github.com/microsoft/go-mssqldb"
	_ "github.com/microsoft/go-mssqldb/integratedauth/krb5"

	"github.com/tollgate-db/tollgate/agent/kerberos/kdctest"
	"github.com/tollgate-db/tollgate/agent/sqlserver/tds"
	"github.com/tollgate-db/tollgate/test/harness"
	"github.com/tollgate-db/tollgate/test/tdsserver"
)

func start(t *testing.T, cfg tdsserver.Config) *tdsserver.Server {
	t.Helper()
	if cfg.TLS == nil {
		ca := harness.NewCA(t, "tds test CA")
		kp := ca.IssueServer(t, "localhost", "127.0.0.1")
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{kp.TLSCertificate()}, MaxVersion: tls.VersionTLS12}
	}
	s, err := tdsserver.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func password(user, pw string) error {
	if user == "app" && pw == "secret" {
		return nil
	}
	return errors.New("wrong password")
}

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlserver", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func dsn(addr string, q url.Values, user *url.Userinfo) string {
	u := url.URL{Scheme: "sqlserver", Host: addr, User: user, RawQuery: q.Encode()}
	return u.String()
}

// TestGoMSSQLDB runs go-mssqldb against the server in each encryption
// mode: a batch, a parameterised query (sp_executesql), a transaction,
// a cancelled WAITFOR, and the errors of a wrong password and database.
func TestGoMSSQLDB(t *testing.T) {
	s := start(t, tdsserver.Config{Password: password})
	ctx := context.Background()
	for _, enc := range []string{"disable", "false", "true"} {
		t.Run("encrypt="+enc, func(t *testing.T) {
			q := url.Values{"database": {"app"}, "encrypt": {enc}, "TrustServerCertificate": {"true"}, "app name": {"tdstest"}}
			db := open(t, dsn(s.Addr(), q, url.UserPassword("app", "secret")))
			var n int64
			if err := db.QueryRowContext(ctx, "select 1").Scan(&n); err != nil || n != 1 {
				t.Fatalf("select 1: %v %d", err, n)
			}
			var str string
			if err := db.QueryRowContext(ctx, "select @p1 as v", "héllo ✓").Scan(&str); err != nil || str != "héllo ✓" {
				t.Fatalf("select @p1: %v %q", err, str)
			}
			if err := db.QueryRowContext(ctx, "select @x", sql.Named("x", int64(42))).Scan(&n); err != nil || n != 42 {
				t.Fatalf("select @x: %v %d", err, n)
			}
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := tx.QueryRowContext(ctx, "select db_name()").Scan(&str); err != nil || str != "app" {
				t.Fatalf("db_name(): %v %q", err, str)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			before := s.Attentions()
			cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			_, err = db.ExecContext(cctx, "waitfor delay '00:00:20'")
			cancel()
			if err == nil {
				t.Fatal("the cancelled WAITFOR succeeded")
			}
			if s.Attentions() != before+1 {
				t.Fatalf("attentions %d, want %d", s.Attentions(), before+1)
			}
			// The connection is still usable after the cancel.
			if err := db.QueryRowContext(ctx, "select 2").Scan(&n); err != nil || n != 2 {
				t.Fatalf("select 2 after cancel: %v %d", err, n)
			}
			_, err = db.ExecContext(ctx, "select 1 from nowhere")
			var me mssql.Error
			if !errors.As(err, &me) || me.Number != 208 {
				t.Fatalf("select from a missing table: %v", err)
			}
		})
	}
	bad := open(t, dsn(s.Addr(), url.Values{"encrypt": {"disable"}}, url.UserPassword("app", "wrong")))
	var me mssql.Error
	if err := bad.PingContext(ctx); !errors.As(err, &me) || me.Number != 18456 {
		t.Fatalf("wrong password: %v", err)
	}
	bad = open(t, dsn(s.Addr(), url.Values{"encrypt": {"disable"}, "database": {"nope"}}, url.UserPassword("app", "secret")))
	if err := bad.PingContext(ctx); !errors.As(err, &me) || me.Number != 4060 {
		t.Fatalf("missing database: %v", err)
	}
	// The server records a refusal as it answers it, which the client can
	// see first: the second one is waited for, not assumed.
	for deadline := time.Now().Add(5 * time.Second); len(s.Violations()) < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if v := s.Violations(); len(v) != 2 {
		t.Fatalf("violations %q, want the two refused logins", v)
	}
}

// TestKerberos logs in with go-mssqldb's own Kerberos client (a keytab of
// bob from the real KDC); the server verifies the AP-REQ with the SPN's
// keytab.
func TestKerberos(t *testing.T) {
	ca := harness.NewCA(t, "client CA")
	kdc := kdctest.Start(t, kdctest.Options{ClientCAPEM: ca.CertPEM})
	bob := kdc.AddUser(t, "bob")
	// go-mssqldb canonicalises the SPN's host with a CNAME lookup (and
	// cuts the last letter of "localhost"): an IP address is left alone.
	spn := "MSSQLSvc/127.0.0.1:1433"
	kt, err := keytab.Load(kdc.AddService(t, spn))
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, tdsserver.Config{Keytab: kt})
	conf := filepath.Join(t.TempDir(), "krb5.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "[libdefaults]\n default_realm = %s\n dns_lookup_kdc = false\n[realms]\n %s = {\n  kdc = %s\n }\n", kdc.Realm, kdc.Realm, kdc.Addr()), 0o600); err != nil {
		t.Fatal(err)
	}
	q := url.Values{"encrypt": {"false"}, "TrustServerCertificate": {"true"}, "authenticator": {"krb5"},
		"krb5-configfile": {conf}, "krb5-keytabfile": {bob}, "krb5-realm": {kdc.Realm}, "ServerSPN": {spn}}
	db := open(t, dsn(s.Addr(), q, url.User("bob")))
	var who string
	if err := db.QueryRow("select suser_sname()").Scan(&who); err != nil {
		t.Fatalf("kerberos login: %v\n%q", err, s.Violations())
	}
	if who != "bob@"+kdc.Realm {
		t.Fatalf("suser_sname() = %q", who)
	}
	l := s.Logins()
	if len(l) != 1 || l[0].Method != "kerberos" || l[0].Principal != "bob@"+kdc.Realm {
		t.Fatalf("logins %+v", l)
	}
}

// TestTsql runs FreeTDS's tsql against the server.
func TestTsql(t *testing.T) {
	if _, err := exec.LookPath("tsql"); err != nil {
		t.Fatal("tsql is not installed: apt-get install freetds-bin")
	}
	s := start(t, tdsserver.Config{Password: password})
	host, port, _ := net.SplitHostPort(s.Addr())
	for _, enc := range []string{"off", "request", "require"} {
		t.Run(enc, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "freetds.conf")
			os.WriteFile(conf, []byte("[global]\n\ttds version = 7.4\n\tencryption = "+enc+"\n"), 0o600)
			cmd := exec.Command("tsql", "-H", host, "-p", port, "-U", "app", "-P", "secret", "-D", "app", "-o", "q")
			cmd.Env = append(os.Environ(), "FREETDSCONF="+conf)
			cmd.Stdin = strings.NewReader("select 41 as answer\ngo\nselect N'x''y' as s, @@spid as spid\ngo\nraiserror('boom', 16, 1)\ngo\nexit\n")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("tsql: %v\n%s\nviolations: %q", err, out, s.Violations())
			}
			for _, want := range []string{"41", "x'y", "boom"} {
				if !strings.Contains(string(out), want) {
					t.Fatalf("tsql output lacks %q:\n%s\nviolations: %q", want, out, s.Violations())
				}
			}
		})
	}
}

// TestStrict sends what SQL Server refuses and checks that the server
// refuses it too.
func TestStrict(t *testing.T) {
	s := start(t, tdsserver.Config{Password: password})
	send := func(b []byte) string {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(b)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		var buf [4096]byte
		n, _ := c.Read(buf[:])
		return string(buf[:n])
	}
	pre := &tds.Prelogin{}
	pre.Set(tds.PreloginVersion, tds.VersionBytes(1, 0, 0, 0))
	pre.Set(tds.PreloginEncryption, []byte{tds.EncryptNotSup})
	prelogin := tds.AppendPackets(nil, tds.PacketPrelogin, pre.Append(nil), 0, 0)
	login := &tds.Login7{TDSVersion: tds.Version74, PacketSize: 4096, UserName: "app", Password: "secret", Database: "app"}
	lb, _ := login.Append(nil)
	bad := append([]byte(nil), lb...)
	// UserName's offset past the end of the message.
	bad[40], bad[41] = 0xF0, 0x0F
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"batch before prelogin", tds.AppendPackets(nil, tds.PacketSQLBatch, tds.AppendSQLBatch(nil, 0, "select 1"), 0, 0), "not PRELOGIN"},
		{"unknown packet type", []byte{0x55, 1, 0, 8, 0, 0, 1, 0}, "unknown packet type"},
		{"short length", []byte{0x12, 1, 0, 4, 0, 0, 1, 0}, "shorter than its header"},
		{"truncated prelogin", prelogin[:len(prelogin)-3], "truncated"},
		{"login past its packet", append(prelogin, tds.AppendPackets(nil, tds.PacketLogin7, bad, 0, 0)...), "runs past"},
	}
	for _, c := range cases {
		before := len(s.Violations())
		out := send(c.data)
		var v []string
		for range 100 {
			if v = s.Violations(); len(v) > before {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(v) <= before || !strings.Contains(v[len(v)-1], c.want) {
			t.Fatalf("%s: violations %q, want one containing %q (answer %q)", c.name, v, c.want, out)
		}
	}
	if n := len(s.Logins()); n != 0 {
		t.Fatalf("%d logins accepted", n)
	}
}
