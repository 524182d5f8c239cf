// Package natsconfig holds the checks of the NATS cluster configurations
// beside it: nats-server reads each with the certificates it names and
// Tollgate's authorization block, and gets the permissions Tollgate's parts
// are given by the embedded server.
package natsconfig

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

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
