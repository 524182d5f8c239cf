package postgres_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/agenttest"
	"github.com/tollgate-db/tollgate/agent/postgres"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
)

// refusals is an agent in front of no database (every connection here is
// refused before one would be reached) storing its events in JetStream.
type refusals struct {
	*agenttest.Stack
	addr string
}

const rejectWindow = time.Second

func newRefusals(t *testing.T) *refusals {
	t.Helper()
	s := agenttest.New(t, agenttest.Options{AckTimeout: 5 * time.Second})
	addr := s.Serve(t, agenttest.Agent{ServerConfig: agent.ServerConfig{
		Databases: []config.Database{{Name: "pg1", Protocol: "postgres", URI: "127.0.0.1:1", StaticLabels: map[string]string{"env": "test"}}},
		ClientCert: func(context.Context, agent.DatabaseInfo, string) (*tls.Certificate, error) {
			return nil, nil
		},
		Engines:          map[string]agent.Engine{"postgres": postgres.New(postgres.Options{Logger: agenttest.Quiet()})},
		HandshakeTimeout: 5 * time.Second,
		RejectWindow:     rejectWindow,
	}})
	return &refusals{Stack: s, addr: addr}
}

// startupMsg is a PostgreSQL StartupMessage for user app.
func startupMsg() []byte {
	body := []byte{0, 3, 0, 0}
	body = append(body, "user\x00app\x00database\x00postgres\x00\x00"...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(4+len(body))), body...)
}

// tlsTry connects over TLS as a client would (sslmode=require with a
// certificate or not), sends a startup and reads until the agent closes.
func (r *refusals) tlsTry(t *testing.T, sni string, certs ...tls.Certificate) {
	t.Helper()
	c, err := tls.Dial("tcp", r.addr, &tls.Config{ServerName: sni, RootCAs: r.HostCAs(t), InsecureSkipVerify: true, Certificates: certs})
	if err != nil {
		t.Fatalf("TLS to the agent (sni %q): %v", sni, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write(startupMsg())
	_, _ = io.Copy(io.Discard, c)
}

// rawTry sends b on a plain connection and reads until the agent closes.
func (r *refusals) rawTry(t *testing.T, b []byte) {
	t.Helper()
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write(b)
	_, _ = io.Copy(io.Discard, c)
}

func (r *refusals) cert(t *testing.T, cas *ca.Authorities, user string, ttl time.Duration) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	c := agenttest.UserCert(t, cas, identity.Identity{User: user, Roles: []string{"dev"}}, ttl)
	return c, c.Leaf
}

func rejectedBy(evs []map[string]any, reason string) []map[string]any {
	var out []map[string]any
	for _, ev := range agenttest.OfType(evs, "db.session.rejected") {
		if ev["reason"] == reason {
			out = append(out, ev)
		}
	}
	return out
}

func counted(evs []map[string]any) int {
	n := 0
	for _, ev := range evs {
		c, _ := ev["count"].(float64)
		n += int(c)
	}
	return n
}

// Connections refused before a session starts are events with the reason,
// the address and what is known of the certificate.
func TestRefusedConnectionsRecorded(t *testing.T) {
	r := newRefusals(t)
	good, _ := r.cert(t, r.CAs, "alice", time.Hour)
	other, err := ca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	foreign, foreignLeaf := r.cert(t, other, "mallory", time.Hour)
	expired, expiredLeaf := r.cert(t, r.CAs, "bob", time.Millisecond)
	time.Sleep(10 * time.Millisecond)

	r.tlsTry(t, "pg1")
	r.tlsTry(t, "pg1", foreign)
	r.tlsTry(t, "pg1", expired)
	r.tlsTry(t, "nosuch", good)
	r.rawTry(t, []byte("GET / HTTP/1.1\r\nHost: pg1\r\n\r\n"))
	r.rawTry(t, append([]byte{0x16, 3, 1, 0, 8}, "notahello"...))
	r.rawTry(t, startupMsg()) // PostgreSQL without TLS

	want := []string{events.RejectNoCertificate, events.RejectCertUntrusted, events.RejectCertExpired,
		events.RejectUnknownDB, events.RejectBadStartup, events.RejectTLSHandshake, events.RejectNotTLS}
	evs := r.WaitAudit(t, "one event per refusal", func(evs []map[string]any) bool {
		for _, w := range want {
			if len(rejectedBy(evs, w)) == 0 {
				return false
			}
		}
		return true
	})
	for _, w := range want {
		ev := rejectedBy(evs, w)[0]
		if ev["code"] != "TGDB006W" || ev["count"] != 1.0 || ev["client_ip"] != "127.0.0.1" ||
			!strings.HasPrefix(ev["client_addr"].(string), "127.0.0.1:") || ev["sid"] != nil {
			t.Errorf("%s: %v", w, ev)
		}
	}
	certOf := func(reason string) map[string]any {
		c, _ := rejectedBy(evs, reason)[0]["client_cert"].(map[string]any)
		if c == nil {
			t.Fatalf("%s: no client_cert", reason)
		}
		return c
	}
	if c := certOf(events.RejectCertUntrusted); !strings.Contains(c["subject"].(string), "mallory") ||
		c["serial"] != foreignLeaf.SerialNumber.Text(16) || c["issuer"] != foreignLeaf.Issuer.String() || len(c["sha256_fingerprint"].(string)) != 64 {
		t.Errorf("foreign certificate: %v", c)
	}
	if c := certOf(events.RejectCertExpired); c["not_after"] != expiredLeaf.NotAfter.UTC().Format(time.RFC3339Nano) &&
		!strings.HasPrefix(c["not_after"].(string), expiredLeaf.NotAfter.UTC().Format("2006-01-02T15:04:05")) {
		t.Errorf("expired certificate: %v (not after %s)", c, expiredLeaf.NotAfter)
	}
	if ev := rejectedBy(evs, events.RejectUnknownDB)[0]; ev["sni"] != "nosuch" || ev["client_cert"] == nil {
		t.Errorf("unknown SNI: %v", ev)
	}
	if ev := rejectedBy(evs, events.RejectNoCertificate)[0]; ev["sni"] != "pg1" || ev["client_cert"] != nil {
		t.Errorf("no certificate: %v", ev)
	}
	// No user is claimed from a certificate that was not trusted.
	for _, ev := range agenttest.OfType(evs, "db.session.rejected") {
		if ev["user"] != nil {
			t.Errorf("%s names user %v", ev["reason"], ev["user"])
		}
	}
}

// A flood from one source makes a handful of events that count it all.
func TestRefusedFloodAggregated(t *testing.T) {
	r := newRefusals(t)
	const n = 1000
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r.rawTry(t, []byte("\x00\x00\x00\x08garbage!"))
		})
	}
	wg.Wait()
	evs := r.WaitAudit(t, "every refusal counted", func(evs []map[string]any) bool {
		return counted(rejectedBy(evs, events.RejectBadStartup)) >= n
	})
	got := rejectedBy(evs, events.RejectBadStartup)
	if c := counted(got); c != n {
		t.Errorf("events count %d refusals, want %d", c, n)
	}
	if len(got) > 10 {
		t.Errorf("%d events for %d refusals from one source", len(got), n)
	}
	t.Logf("%d refusals → %d events", n, len(got))
}
