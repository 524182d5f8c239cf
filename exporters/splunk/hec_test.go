package splunk_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters/internal/exportertest"
	"github.com/tollgate-db/tollgate/exporters/internal/fakehec"
	"github.com/tollgate-db/tollgate/exporters/ocsfcheck"
	"github.com/tollgate-db/tollgate/exporters/internal/testpki"
	_ "github.com/tollgate-db/tollgate/exporters/splunk"
)

const token = "11111111-2222-3333-4444-555555555555"

func checkAll(t *testing.T, hec *fakehec.Server, ids []string) map[string][][]byte {
	t.Helper()
	if v := hec.Violations(); len(v) > 0 {
		t.Fatalf("protocol violations: %s", strings.Join(v, "; "))
	}
	got := hec.Indexed()
	for _, id := range ids {
		if len(got[id]) == 0 {
			t.Fatalf("event %s not indexed (%d of %d are)", id, len(got), len(ids))
		}
		for _, c := range got[id][1:] {
			if !bytes.Equal(c, got[id][0]) {
				t.Fatalf("event %s indexed twice with different contents", id)
			}
		}
	}
	return got
}

// Indexer acknowledgement: requests are confirmed only once acknowledged;
// lost requests (never acknowledged) are sent again.
func TestIndexerAcknowledgement(t *testing.T) {
	hec := fakehec.New(t, fakehec.Options{Token: token, Ack: true, AckAfterPolls: 2, LoseEvery: 5})
	e := exportertest.Start(t, exportertest.Options{})
	ids := e.Fill(t, 3000, nil)
	x, _ := e.Run(t, fmt.Sprintf(`name: hec1
type: splunk_hec
settings:
  url: %s
  token: %s
  index: audit
  source: tollgate
  sourcetype: tollgate:event
  host: gw1
  ack: true
  ack_timeout: 1s
  ack_poll_interval: 20ms
  max_request_bytes: 65536
  linger: 20ms`, hec.URL, token))
	e.Settled(t, "hec1", 60*time.Second)
	got := checkAll(t, hec, ids)
	// The event is the stored event, verbatim.
	stored := e.AuditEvents(t, "db.session.query")
	var first struct{ ID string }
	_ = json.Unmarshal(stored[0], &first)
	if !bytes.Equal(got[first.ID][0], stored[0]) {
		t.Fatalf("indexed event differs from the stored one:\n%s\n%s", got[first.ID][0], stored[0])
	}
	accepted, _, _ := hec.Counters()
	if accepted < 10 {
		t.Fatalf("only %d requests: batches were not split by max_request_bytes", accepted)
	}
	if st := x.Stats(); st.Retries == 0 {
		t.Fatalf("stats %+v: lost requests should have been retried", st)
	}
}

// TLS with a custom CA, OCSF form, 503s for a while.
func TestTLSBusyOCSF(t *testing.T) {
	pki := testpki.New(t)
	hec := fakehec.New(t, fakehec.Options{Token: token, TLS: pki.ServerConfig()})
	hec.Busy(1500 * time.Millisecond)
	e := exportertest.Start(t, exportertest.Options{})
	ids := e.Fill(t, 500, nil)
	x, _ := e.Run(t, fmt.Sprintf(`name: hec2
type: splunk_hec
format: ocsf
settings:
  url: %s
  token: %s
  tls:
    ca_file: %s
  linger: 20ms
  backoff_min: 50ms
  backoff_max: 300ms`, hec.URL, token, pki.CAFile))
	e.Settled(t, "hec2", 60*time.Second)
	got := checkAll(t, hec, ids)
	for _, id := range ids {
		if err := ocsfcheck.Check(got[id][0]); err != nil {
			t.Fatalf("event %s: %v\n%s", id, err, got[id][0])
		}
	}
	if _, busy, _ := hec.Counters(); busy == 0 {
		t.Fatal("the server was never busy")
	}
	if st := x.Stats(); st.Retries == 0 || st.DeadLetters != 0 {
		t.Fatalf("stats %+v: want retries after 503 and no dead letters", st)
	}
}

// An event the collector refuses is dead-lettered; the rest of its batch
// is indexed, and the report of the dead letter reaches Splunk too.
func TestPoisonEvent(t *testing.T) {
	hec := fakehec.New(t, fakehec.Options{Token: token, Reject: func(ev []byte) bool {
		return bytes.Contains(ev, []byte("poison-pill"))
	}})
	e := exportertest.Start(t, exportertest.Options{})
	ids := e.Fill(t, 1000, func(i int) events.Event {
		q := exportertest.Query(i)
		if i == 617 {
			q.Query = "SELECT 'poison-pill'"
		}
		return q
	})
	x, _ := e.Run(t, fmt.Sprintf(`name: hec3
type: splunk_hec
settings:
  url: %s
  token: %s
  linger: 20ms`, hec.URL, token))
	e.Settled(t, "hec3", 60*time.Second)
	rest := append(append([]string(nil), ids[:617]...), ids[618:]...)
	got := checkAll(t, hec, rest)
	if _, ok := got[ids[617]]; ok {
		t.Fatal("the refused event was indexed")
	}
	dl := e.DeadLetters(t, "hec3")
	if len(dl) != 1 || dl[0].Header.Get("Tollgate-Event-Id") != ids[617] {
		t.Fatalf("%d dead letters, want event %s", len(dl), ids[617])
	}
	if st := x.Stats(); st.DeadLetters != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The report was exported like any event.
	found := false
	for _, copies := range got {
		if bytes.Contains(copies[0], []byte(`"type":"exporter.dead_letter"`)) && bytes.Contains(copies[0], []byte(ids[617])) {
			found = true
		}
	}
	if !found {
		t.Fatal("no exporter.dead_letter event reached the collector")
	}
}

// A wrong token is a configuration problem, never a reason to drop events.
func TestWrongTokenRetries(t *testing.T) {
	hec := fakehec.New(t, fakehec.Options{Token: token})
	e := exportertest.Start(t, exportertest.Options{})
	e.Fill(t, 10, nil)
	x, stop := e.Run(t, fmt.Sprintf(`name: hec4
type: splunk_hec
settings:
  url: %s
  token: not-the-token
  linger: 20ms
  backoff_min: 20ms
  backoff_max: 50ms`, hec.URL))
	deadline := time.Now().Add(20 * time.Second)
	for x.Stats().Retries < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	st := x.Stats()
	if st.Retries < 3 || st.Delivered != 0 || st.DeadLetters != 0 || hec.Count() != 0 {
		t.Fatalf("stats %+v, %d indexed: want retries only", st, hec.Count())
	}
	if !strings.Contains(st.LastError, "403") || strings.Contains(st.LastError, "not-the-token") {
		t.Fatalf("last error %q: want the 403, never the token", st.LastError)
	}
}
