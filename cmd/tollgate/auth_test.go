package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/test/harness"
)

// authTestBinary builds the tollgate command once per test binary run.
func authTestBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tollgate")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// authRun runs the binary and returns stdout; it fails the test on a
// non-zero exit unless wantErr, in which case it returns stderr.
func authRun(t *testing.T, bin string, wantErr bool, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TOLLGATE_CONFIG=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if wantErr {
		if err == nil {
			t.Fatalf("tollgate %s: succeeded, want an error\n%s", strings.Join(args, " "), stdout.Bytes())
		}
		return stderr.Bytes()
	}
	if err != nil {
		t.Fatalf("tollgate %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes()
}

func TestAuthCommands(t *testing.T) {
	bin := authTestBinary(t)
	dd := t.TempDir()
	out := t.TempDir()

	// export: every type, PEM or DER, equal to the CA in the data dir.
	run := func(args ...string) []byte {
		return authRun(t, bin, false, append([]string{"--data-dir", dd}, args...)...)
	}
	pems := map[string][]byte{}
	for _, typ := range []string{"user", "host", "db", "db-client"} {
		b := run("auth", "export", "--type="+typ)
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "CERTIFICATE" {
			t.Fatalf("export %s: not PEM: %q", typ, b)
		}
		pems[typ] = b
	}
	a, err := ca.Open(dd)
	if err != nil {
		t.Fatal(err)
	}
	for typ, b := range pems {
		tt, _ := ca.ParseType(typ)
		want, _ := a.CertPEM(tt)
		if !bytes.Equal(b, want) {
			t.Errorf("export %s differs from the data dir's CA", typ)
		}
	}
	der := run("auth", "export", "--type=db-client-der")
	dbClientCA, _ := a.Cert(ca.DBClient)
	if !bytes.Equal(der, dbClientCA.Raw) {
		t.Fatal("db-client-der is not the db-client CA in DER")
	}

	// crl, revoke, crl again: openssl reads both and lists the serial.
	crlPath := filepath.Join(out, "db-client.crl")
	run("auth", "crl", "--type=db_client", "--out", crlPath)
	if text := authOpenSSL(t, "crl", "-inform", "DER", "-in", crlPath, "-noout", "-text"); !strings.Contains(text, "No Revoked Certificates") {
		t.Fatalf("empty CRL:\n%s", text)
	}
	cc, _, err := a.IssueDBClient(authECKey(t).Public(), "bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serial := strings.ToUpper(cc.SerialNumber.Text(16))
	run("auth", "revoke", "--type=db_client", "--serial="+serial)
	crl := run("auth", "crl")
	if err := os.WriteFile(crlPath, crl, 0o644); err != nil {
		t.Fatal(err)
	}
	text := authOpenSSL(t, "crl", "-inform", "DER", "-in", crlPath, "-noout", "-text")
	if !strings.Contains(strings.ReplaceAll(text, ":", ""), serial) {
		t.Fatalf("CRL does not list revoked serial %s:\n%s", serial, text)
	}

	// cockroachdb.
	crdb := filepath.Join(out, "certs")
	run("auth", "sign", "--format=cockroachdb", "--host=crdb.internal,127.0.0.1", "--out="+crdb, "--ttl=24h")
	for _, n := range []string{"ca.crt", "ca-client.crt", "node.crt", "node.key"} {
		if _, err := os.Stat(filepath.Join(crdb, n)); err != nil {
			t.Fatal(err)
		}
	}
	node, err := tls.LoadX509KeyPair(filepath.Join(crdb, "node.crt"), filepath.Join(crdb, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(crdb, "ca.crt"))
	caPool.AppendCertsFromPEM(caPEM)
	if node.Leaf.Subject.CommonName != "node" || !slices.Contains(node.Leaf.DNSNames, "node") || !slices.Contains(node.Leaf.DNSNames, "crdb.internal") {
		t.Fatalf("node cert CN %q DNS %v", node.Leaf.Subject.CommonName, node.Leaf.DNSNames)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := node.Leaf.Verify(x509.VerifyOptions{Roots: caPool, DNSName: "crdb.internal", KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			t.Fatalf("node cert against ca.crt: %v", err)
		}
	}
	if d := time.Until(node.Leaf.NotAfter); d > 24*time.Hour || d < 23*time.Hour {
		t.Fatalf("--ttl=24h gave %s", d)
	}
	if fi, _ := os.Stat(filepath.Join(crdb, "node.key")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("node.key mode %04o", fi.Mode().Perm())
	}

	// identity: a file that loads, whose identity the user CA verifies.
	idPath := filepath.Join(out, "bot.identity")
	run("auth", "sign", "--format=identity", "--user=bot", "--roles=access,auditor", "--db-users=app,ro", "--db-names=*", "--out="+idPath, "--ttl=2h", "--proxy=tollgate.example.com:443")
	f, err := identity.LoadFile(idPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(idPath); fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file mode %04o", fi.Mode().Perm())
	}
	id, err := a.VerifyUser([]*x509.Certificate{f.Cert.Leaf})
	if err != nil {
		t.Fatal(err)
	}
	if f.ProxyAddr != "tollgate.example.com:443" || id.User != "bot" || !slices.Equal(id.Roles, []string{"access", "auditor"}) ||
		!slices.Equal(id.Traits[identity.TraitDBUsers], []string{"app", "ro"}) || !slices.Equal(id.Traits[identity.TraitDBNames], []string{"*"}) {
		t.Fatalf("identity file: proxy %q identity %+v", f.ProxyAddr, id)
	}
	if d := time.Until(id.Expires); d > 2*time.Hour || d < 2*time.Hour-time.Minute {
		t.Fatalf("--ttl=2h gave %s", d)
	}

	// Mistakes are refused with a message naming them.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"auth", "export", "--type=tls"}, `unknown export type "tls"`},
		{[]string{"auth", "export"}, "--type is required"},
		{[]string{"auth", "crl", "--type=ssh"}, `unknown CA type "ssh"`},
		{[]string{"auth", "sign", "--format=pem", "--out=x"}, `unknown --format "pem"`},
		{[]string{"auth", "sign", "--format=db", "--out=" + filepath.Join(out, "x")}, "--host is required"},
		{[]string{"auth", "sign", "--format=identity", "--user=u", "--out=" + filepath.Join(out, "u")}, "--roles is required"},
		{[]string{"auth", "sign", "--format=identity", "--roles=r", "--out=" + filepath.Join(out, "u")}, "--user is required"},
		{[]string{"auth", "revoke", "--serial=zz"}, "not a hexadecimal serial"},
	} {
		msg := authRun(t, bin, true, append([]string{"--data-dir", dd}, tc.args...)...)
		if !strings.Contains(string(msg), tc.want) {
			t.Errorf("tollgate %s: stderr %q, want %q", strings.Join(tc.args, " "), msg, tc.want)
		}
	}

	// A CA key readable by others stops every command.
	key := filepath.Join(dd, "ca", "user.key")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	msg := authRun(t, bin, true, "--data-dir", dd, "auth", "export", "--type=user")
	if !strings.Contains(string(msg), "wider than 0600") {
		t.Fatalf("too-open key: %q", msg)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}

	// Without --data-dir, data_dir of --config is used.
	cfgDir := t.TempDir()
	cfg := filepath.Join(cfgDir, "tollgate.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: state\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := authRun(t, bin, false, "auth", "export", "--type=host", "--config", cfg)
	onDisk, err := os.ReadFile(filepath.Join(cfgDir, "state", "ca", "host.crt"))
	if err != nil || !bytes.Equal(b, onDisk) {
		t.Fatalf("--config data_dir not used: %v", err)
	}
}

// TestAuthSignDBWithPostgres starts a real PostgreSQL 15 (test/harness)
// with the three files of `tollgate auth sign --format=db` as ssl_cert_file,
// ssl_key_file and ssl_ca_file and pg_hba "hostssl all all 127.0.0.1/32
// cert", and logs in with a db-client certificate from IssueDBClient,
// verifying the server against the db CA (sslmode verify-full).
func TestAuthSignDBWithPostgres(t *testing.T) {
	bin := authTestBinary(t)
	dd := t.TempDir()
	cdir := t.TempDir()
	prefix := filepath.Join(cdir, "server")
	authRun(t, bin, false, "--data-dir", dd, "auth", "sign", "--format=db", "--host=localhost,127.0.0.1", "--out="+prefix, "--ttl=24h")
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	dbCA := filepath.Join(cdir, "db-ca.crt")
	if err := os.WriteFile(dbCA, authRun(t, bin, false, "--data-dir", dd, "auth", "export", "--type=db"), 0o644); err != nil {
		t.Fatal(err)
	}
	pg := harness.PostgresWith(t, harness.PostgresOptions{
		TLS: harness.TLSOptions{
			ClientCA:   read(prefix + ".cas"),
			ServerCert: read(prefix + ".crt"),
			ServerKey:  read(prefix + ".key"),
			ServerCA:   read(dbCA),
		},
		Users: []string{"alice", "bob"},
	})

	a, err := ca.Open(dd)
	if err != nil {
		t.Fatal(err)
	}
	writeClient := func(name string, a *ca.Authorities, dbUser string) (crt, key string) {
		k := authECKey(t)
		_, certPEM, err := a.IssueDBClient(k.Public(), dbUser, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalPKCS8PrivateKey(k)
		crt, key = filepath.Join(cdir, name+".crt"), filepath.Join(cdir, name+".key")
		if err := os.WriteFile(crt, certPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
			t.Fatal(err)
		}
		return crt, key
	}
	connect := func(host, crt, key, rootCA string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dsn := fmt.Sprintf("host=%s port=%d user=alice dbname=postgres sslmode=verify-full sslrootcert=%s sslcert=%s sslkey=%s connect_timeout=5",
			host, pg.Port(), rootCA, crt, key)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return "", err
		}
		defer conn.Close(ctx)
		var who string
		err = conn.QueryRow(ctx, "select current_user").Scan(&who)
		return who, err
	}

	crt, key := writeClient("alice", a, "alice")
	for _, host := range []string{"127.0.0.1", "localhost"} {
		who, err := connect(host, crt, key, dbCA)
		if err != nil {
			t.Fatalf("connect to %s: %v", host, err)
		}
		if who != "alice" {
			t.Fatalf("current_user = %q, want alice", who)
		}
	}

	// A client certificate from another data dir's db-client CA is refused
	// by PostgreSQL.
	other, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ocrt, okey := writeClient("foreign", other, "alice")
	if _, err := connect("127.0.0.1", ocrt, okey, dbCA); err == nil {
		t.Fatal("PostgreSQL accepted a client certificate of another CA")
	}
	// A certificate for another database user does not log in as alice.
	bcrt, bkey := writeClient("bob", a, "bob")
	if _, err := connect("127.0.0.1", bcrt, bkey, dbCA); err == nil || !strings.Contains(err.Error(), "alice") {
		t.Fatalf("CN=bob logged in as alice: %v", err)
	}
	// The client refuses the server when it trusts a CA other than db.
	clientCA := filepath.Join(cdir, "db-client-ca.crt")
	if err := os.WriteFile(clientCA, authRun(t, bin, false, "--data-dir", dd, "auth", "export", "--type=db-client"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := connect("127.0.0.1", crt, key, clientCA); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("server verified against the db-client CA: %v", err)
	}
}

func authECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func authOpenSSL(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is not installed (apt-get install openssl)")
	}
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
