package security

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/test/faults"
)

// apiClient is a client of the world's API presenting cert (nil for
// none), trusting only the cluster's host CA.
func (w *world) apiClient(cert *tls.Certificate) *api.Client {
	w.t.Helper()
	hostCA, err := w.cas.CertPEM(ca.Host)
	if err != nil {
		w.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(hostCA)
	name, err := api.ServerName(w.proxyAddr)
	if err != nil {
		w.t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c := *cert
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	c, err := api.NewClient(w.proxyAddr, tc, "security-test")
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(c.Close)
	return c
}

func loadPair(t testing.TB, certFile, keyFile string) *tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

func status(err error) int {
	var se *api.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// waitRefused polls try until it fails and returns how long that took.
func waitRefused(t testing.TB, what string, try func() error) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	for {
		if err := try(); err != nil {
			return time.Since(start), err
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s: still allowed 10s later", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A removed user's certificate stops working at the API and at the agent
// at once, and the user's live session ends, although the certificate is
// signed for hours more.
func TestRemovedUserCertificateAtTheAPIAndTheAgent(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if out, err := w.tollgate("users", "add", "bob", "--roles=access,editor", "--db-users="+faults.DBUser, "--db-names=postgres"); err != nil {
		t.Fatalf("users add: %v\n%s", err, out)
	}
	_, bobCert, bobKey := faults.UserFiles(t, w.cas, w.dir, "bob")
	bob := w.apiClient(loadPair(t, bobCert, bobKey))
	if _, err := bob.Whoami(ctx); err != nil {
		t.Fatalf("whoami before removal: %v", err)
	}
	if err := w.query(bobCert, bobKey, "SELECT 'bob before removal'"); err != nil {
		t.Fatal(err)
	}
	cfg, err := faults.PgxConfig(w.agentAddr, w.hostCA, bobCert, bobKey)
	if err != nil {
		t.Fatal(err)
	}
	live, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close(context.Background())

	if out, err := w.tollgate("users", "rm", "bob"); err != nil {
		t.Fatalf("users rm: %v\n%s", err, out)
	}
	// From the command's return: the API, a new session, the live one.
	apiAfter, apiErr := waitRefused(t, "the removed user's certificate at the API", func() error {
		_, err := bob.Whoami(ctx)
		return err
	})
	if status(apiErr) != http.StatusUnauthorized || !strings.Contains(apiErr.Error(), "no longer exists") {
		t.Fatalf("API refusal: %v (status %d), want 401 naming the removed user", apiErr, status(apiErr))
	}
	if _, err := bob.AddToken(ctx, api.AddTokenRequest{Type: "db"}); err == nil {
		t.Fatal("the removed editor created a join token")
	}
	agentAfter, agentErr := waitRefused(t, "the removed user's certificate at the agent", func() error {
		return w.query(bobCert, bobKey, "SELECT 'bob after removal'")
	})
	if !strings.Contains(agentErr.Error(), "no longer exists") {
		t.Fatalf("agent refusal: %v, want one naming the removed user", agentErr)
	}
	liveAfter, liveErr := waitRefused(t, "the removed user's live session", func() error {
		_, err := live.Exec(ctx, "SELECT 'bob live'")
		return err
	})
	t.Logf("users rm returned → refused: API %v, new session at the agent %v, live session ended %v (%v)", apiAfter, agentAfter, liveAfter, liveErr)
	if w.logged("bob after removal") {
		t.Fatal("a statement of the removed user reached PostgreSQL")
	}
}

// A single-use join token joins one host; a second join with it is
// refused, and a joined host gets db-client certificates only for the
// databases registered to it.
func TestJoinTokenReuseAndForeignDBClientCertificate(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := w.stdout("tokens", "add", "--type=db")
	if err != nil {
		t.Fatalf("tokens add: %v\n%s", err, out)
	}
	token := strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	anon := w.apiClient(nil)
	join := func(host string) (*api.Certificate, *ecdsa.PrivateKey, error) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, err := api.EncodePublicKey(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		c, err := anon.Join(ctx, api.JoinRequest{Token: token, HostID: host, PublicKey: pub})
		return c, k, err
	}
	rogue, key, err := join("rogue-host")
	if err != nil {
		t.Fatalf("first join: %v", err)
	}
	t.Run("JoinTokenReuse", func(t *testing.T) {
		if _, _, err := join("second-host"); err == nil || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("second join with a single-use token: %v", err)
		}
	})
	t.Run("DBClientCertificateForForeignDatabase", func(t *testing.T) {
		block, _ := pem.Decode([]byte(rogue.CertPEM))
		if block == nil {
			t.Fatal("no host certificate")
		}
		host := w.apiClient(&tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key})
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, _ := api.EncodePublicKey(k.Public())
		for _, u := range []string{"postgres", faults.DBUser} {
			_, err := host.AgentDBClient(ctx, api.DBClientRequest{Database: faults.PGName, DBUser: u, PublicKey: pub})
			if status(err) != http.StatusForbidden || !strings.Contains(err.Error(), faults.PGName) {
				t.Fatalf("db-client certificate for %s as %s on a foreign database: %v (status %d), want 403 naming it", faults.PGName, u, err, status(err))
			}
		}
		// Nor can the rogue host take the database over while its agent
		// is alive.
		_, err := host.AgentRegister(ctx, api.RegisterRequest{Databases: []api.RegisterDatabase{{Name: faults.PGName, Protocol: "postgres",
			URI: "127.0.0.1:1", AgentAddr: "127.0.0.1:2"}}})
		if err == nil {
			t.Fatal("a rogue host took over a live database")
		}
	})
	// The real agent still serves the database.
	if err := w.query(w.userCert, w.userKey, "SELECT 'still served'"); err != nil {
		t.Fatal(err)
	}
}
