// Package security runs the known attacks on the audit trail against
// `tollgate start` and a real PostgreSQL, and fails if one works.
package security

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events/natsserver"
	"github.com/tollgate-db/tollgate/test/faults"
)

// The attacks on the event plane share one world: none of them may change
// it, and each checks that nothing was lost.
func TestEventPlane(t *testing.T) {
	w := newWorld(t)
	_, auditor, _ := w.as(natsserver.Auditor)
	if err := w.query(w.userCert, w.userKey, "SELECT 'before the attacks'"); err != nil {
		t.Fatal(err)
	}
	before := auditCount(t, auditor, "audit.>", "")
	if before == 0 {
		t.Fatal("no audit events stored for the first statement")
	}
	ctx := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		t.Cleanup(cancel)
		return c
	}

	t.Run("AnonymousConnectRefused", func(t *testing.T) {
		_, err := nats.Connect("tls://"+w.natsAddr, nats.RootCAs(filepath.Join(w.creds.Dir, natsserver.TLSCertFile)), nats.Timeout(2*time.Second))
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("anonymous connection: %v, want an authorization violation", err)
		}
		if _, err := nats.Connect("nats://"+w.natsAddr, nats.Timeout(2*time.Second)); err == nil {
			t.Fatal("plaintext anonymous connection accepted")
		}
	})
	t.Run("AnonymousCannotWatchAuditLive", func(t *testing.T) {
		// Without credentials there is no connection, so no subscription.
		if nc, err := nats.Connect("tls://"+w.natsAddr, nats.RootCAs(filepath.Join(w.creds.Dir, natsserver.TLSCertFile)),
			nats.UserInfo("", ""), nats.Timeout(2*time.Second)); err == nil {
			nc.Close()
			t.Fatal("connected without credentials")
		}
	})
	t.Run("AgentForgesUserCreateInState", func(t *testing.T) {
		_, js, errs := w.as(natsserver.Agent)
		_, err := js.Publish(ctx(), "state.user.mallory", []byte(`{"type":"user.create","user_name":"mallory","roles":["editor"]}`))
		refused(t, "agent publishes state.user.mallory", err, errs)
	})
	t.Run("AgentForgesRoleUpdateAndTokenCreateInState", func(t *testing.T) {
		_, js, errs := w.as(natsserver.Agent)
		_, err := js.Publish(ctx(), "state.role.access", []byte(`{"type":"role.update"}`))
		refused(t, "agent publishes state.role.access", err, errs)
		_, err = js.Publish(ctx(), "state.token.rogue", []byte(`{"type":"token.create"}`))
		refused(t, "agent publishes state.token.rogue", err, errs)
	})
	t.Run("AgentReadsCredentialsKV", func(t *testing.T) {
		_, js, errs := w.as(natsserver.Agent)
		_, err := js.KeyValue(ctx(), "CREDENTIALS")
		refused(t, "agent binds KV_CREDENTIALS", err, errs)
		nc, _, errs := w.as(natsserver.Agent)
		_, err = nc.Request("$JS.API.DIRECT.GET.KV_CREDENTIALS", []byte(`{"last_by_subj":"$KV.CREDENTIALS.demo"}`), 500*time.Millisecond)
		refused(t, "agent direct get on KV_CREDENTIALS", err, errs)
	})
	t.Run("AuditorSubscribesToAuditLive", func(t *testing.T) {
		nc, _, errs := w.as(natsserver.Auditor)
		if _, err := nc.SubscribeSync("audit.>"); err != nil {
			t.Fatal(err)
		}
		refused(t, "auditor subscribes to audit.>", nc.Flush(), errs)
	})
	t.Run("AgentOrExporterForgesTheSessionsIndex", func(t *testing.T) {
		// The broker keeps the index of sessions in the SESSIONS bucket
		// (sessions.IndexBucket); the auditor reads it, no one else may
		// write it: a forged entry would hide a session from `sessions ls`
		// or point its replay at other events.
		_, ajs, _ := w.as(natsserver.Auditor)
		var kv jetstream.KeyValue
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			var err error
			if kv, err = ajs.KeyValue(ctx(), "SESSIONS"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("auditor binds the sessions index: %v", err)
			}
		}
		for _, p := range []natsserver.Part{natsserver.Agent, natsserver.Exporter, natsserver.Auditor} {
			_, js, errs := w.as(p)
			_, err := js.Publish(ctx(), "$KV.SESSIONS.s.forged", []byte(`{"sid":"forged","user":"nobody"}`))
			refused(t, string(p)+" writes the sessions index", err, errs)
			_, js, errs = w.as(p)
			_, err = js.Publish(ctx(), "$KV.SESSIONS.progress", []byte(`{"seq":18446744073709551615}`))
			refused(t, string(p)+" moves the sessions index's progress", err, errs)
		}
		for _, p := range []natsserver.Part{natsserver.Agent, natsserver.Exporter} {
			nc, _, errs := w.as(p)
			_, err := nc.Request("$JS.API.DIRECT.GET.KV_SESSIONS", []byte(`{"last_by_subj":"$KV.SESSIONS.progress"}`), 500*time.Millisecond)
			refused(t, string(p)+" reads the sessions index", err, errs)
		}
		if _, err := kv.Get(ctx(), "s.forged"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("a forged entry is in the sessions index: %v", err)
		}
		// The index still tells the first statement's session.
		out, err := w.stdout("sessions", "ls", "--user="+faults.TollgateUser, "--format=json")
		if err != nil {
			t.Fatalf("sessions ls: %v: %s", err, out)
		}
		var ss []struct {
			SID        string `json:"sid"`
			Statements uint64 `json:"statements"`
		}
		if err := json.Unmarshal([]byte(out), &ss); err != nil || len(ss) == 0 || ss[0].Statements == 0 {
			t.Fatalf("sessions ls: %v: %s", err, out)
		}
		if out, err := w.stdout("sessions", "replay", ss[0].SID); err != nil || !strings.Contains(out, "before the attacks") {
			t.Fatalf("sessions replay %s: %v: %s", ss[0].SID, err, out)
		}
	})
	t.Run("ExporterForgesDropTableIntoLiveSession", func(t *testing.T) {
		_, js, errs := w.as(natsserver.Exporter)
		_, err := js.Publish(ctx(), "audit.faults.01SESSION.db.session.query", []byte(`{"type":"db.session.query","db_query":"DROP TABLE pgbench_accounts"}`))
		refused(t, "exporter publishes an audit event", err, errs)
	})
	for _, p := range []natsserver.Part{natsserver.Agent, natsserver.Exporter, natsserver.Auditor} {
		for _, op := range []string{"UPDATE", "DELETE", "PURGE"} {
			t.Run(string(p)+"Stream"+op+"OfAudit", func(t *testing.T) {
				nc, _, errs := w.as(p)
				_, err := nc.Request("$JS.API.STREAM."+op+".AUDIT", []byte(`{"name":"AUDIT","subjects":["audit.>"],"storage":"memory","max_msgs":1}`), 500*time.Millisecond)
				refused(t, string(p)+" "+op+" AUDIT", err, errs)
			})
		}
	}
	t.Run("BrokerDeletesOrPurgesTheTrail", func(t *testing.T) {
		nc, _, errs := w.as(natsserver.Broker)
		for _, subj := range []string{"$JS.API.STREAM.DELETE.AUDIT", "$JS.API.STREAM.PURGE.AUDIT", "$JS.API.STREAM.MSG.DELETE.AUDIT",
			"$JS.API.STREAM.DELETE.STATE", "$JS.API.STREAM.PURGE.STATE", "$JS.API.STREAM.MSG.DELETE.STATE"} {
			_, err := nc.Request(subj, []byte(`{"seq":1}`), 500*time.Millisecond)
			refused(t, "broker "+subj, err, errs)
		}
	})
	t.Run("BrokerUnsetsDenyFlags", func(t *testing.T) {
		// Even the broker's identity cannot take the flags off: the
		// server refuses to weaken them by update.
		_, js, _ := w.as(natsserver.Broker)
		s, err := js.Stream(ctx(), "AUDIT")
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		if !cfg.DenyDelete || !cfg.DenyPurge {
			t.Fatalf("AUDIT deny_delete %v deny_purge %v", cfg.DenyDelete, cfg.DenyPurge)
		}
		cfg.DenyDelete, cfg.DenyPurge = false, false
		if _, err := js.UpdateStream(ctx(), cfg); err == nil {
			s, _ = js.Stream(ctx(), "AUDIT")
			if c := s.CachedInfo().Config; !c.DenyDelete || !c.DenyPurge {
				t.Fatalf("the broker's identity turned AUDIT's deny flags off")
			}
		}
	})

	// Nothing was lost or added: every event is still there, and the
	// statements still reach the database with their events.
	if after := auditCount(t, auditor, "audit.>", ""); after < before {
		t.Fatalf("AUDIT held %d events before the attacks and %d after", before, after)
	}
	if n := auditCount(t, auditor, "audit.*.01SESSION.>", ""); n != 0 {
		t.Fatalf("%d forged events stored in session 01SESSION", n)
	}
	if err := w.query(w.userCert, w.userKey, "SELECT 'after the attacks'"); err != nil {
		t.Fatal(err)
	}
	if !w.logged("after the attacks") {
		t.Fatal("statement after the attacks not in PostgreSQL's log")
	}
}

// TestAuditWeakenedBehindTheBrokersBack reconfigures AUDIT with the
// broker's own identity (as someone who stole its seed, or an operator of
// the NATS cluster, would): strict statements are refused, naming what
// changed, and are never run; restored, they run again.
func TestAuditWeakenedBehindTheBrokersBack(t *testing.T) {
	w := newWorld(t)
	_, js, _ := w.as(natsserver.Broker)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := w.query(w.userCert, w.userKey, "SELECT 'audited'"); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "AUDIT")
	if err != nil {
		t.Fatal(err)
	}
	good := s.CachedInfo().Config
	weak := good
	weak.MaxMsgs = 1
	if _, err := js.UpdateStream(ctx, weak); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		lastErr = w.query(w.userCert, w.userKey, "SELECT 'while weakened "+string(rune('a'+i%26))+"'")
		if lastErr != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if lastErr == nil {
		t.Fatal("statements still forwarded 10s after AUDIT was weakened")
	}
	if !strings.Contains(lastErr.Error(), "max_msgs") {
		t.Fatalf("refusal does not name what changed: %v", lastErr)
	}
	if err := w.query(w.userCert, w.userKey, "SELECT 'refused while weakened'"); err == nil {
		t.Fatal("statement forwarded while AUDIT is weakened")
	}
	if w.logged("refused while weakened") {
		t.Fatal("a refused statement reached PostgreSQL")
	}
	// Restored by the broker's configuration, statements run again.
	if _, err := js.UpdateStream(ctx, good); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		err := w.query(w.userCert, w.userKey, "SELECT 'restored'")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statements still refused 10s after AUDIT was restored: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The broker recorded the alert.
	_, auditor, _ := w.as(natsserver.Auditor)
	if n := auditCount(t, auditor, "audit.>", "audit.stream_weakened"); n == 0 {
		t.Fatal("no audit.stream_weakened alert stored")
	}
}
