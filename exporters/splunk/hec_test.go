package splunk_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/format"
	"github.com/tollgate-db/tollgate/exporters/internal/exportertest"
	"github.com/tollgate-db/tollgate/exporters/internal/fakehec"
	"github.com/tollgate-db/tollgate/exporters/internal/testpki"
	"github.com/tollgate-db/tollgate/exporters/ocsfcheck"
	"github.com/tollgate-db/tollgate/exporters/splunk"
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
// The events are stored one per message, or in frames whose events are
// spread over several requests.
func TestIndexerAcknowledgement(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		indexerAck(t, func(e *exportertest.Env) []string { return e.Fill(t, 3000, nil) })
	})
	t.Run("frames", func(t *testing.T) {
		indexerAck(t, func(e *exportertest.Env) []string { return e.FillFrames(t, 3000, nil) })
	})
}

func indexerAck(t *testing.T, fill func(*exportertest.Env) []string) {
	hec := fakehec.New(t, fakehec.Options{Token: token, Ack: true, AckAfterPolls: 2, LoseEvery: 5})
	e := exportertest.Start(t, exportertest.Options{})
	ids := fill(e)
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

func TestMain(m *testing.M) {
	exportertest.MaybeChild()
	os.Exit(m.Run())
}

// BenchmarkDrain drains TOLLGATE_BENCH_EVENTS events (100,000 by default;
// the notes' figures use 1,000,000) through the HEC sink in a child
// process, to the fake collector counting events without decoding them.
func BenchmarkDrain(b *testing.B) {
	n := exportertest.BenchEvents(100000)
	hec := fakehec.New(b, fakehec.Options{Token: token, CountOnly: true})
	e := exportertest.Start(b, exportertest.Options{})
	e.Fill(b, n, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("bench%d", i)
		took, rss := e.Drain(b, name, fmt.Sprintf("name: %s\ntype: splunk_hec\nsettings:\n  url: %s\n  token: %s", name, hec.URL, token))
		exportertest.Report(b, n, took, rss)
	}
}

// BenchmarkAppendEvent is the sink's cost per event: one HEC event object.
func BenchmarkAppendEvent(b *testing.B) {
	s, err := splunk.New(splunk.Config{URL: "http://127.0.0.1:1", Token: token, Index: "audit", Source: "tollgate", Sourcetype: "tollgate:event"})
	if err != nil {
		b.Fatal(err)
	}
	r := record(b)
	var dst []byte
	b.ReportAllocs()
	for b.Loop() {
		dst = s.AppendEvent(dst[:0], &r)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func record(b testing.TB) exporters.Record {
	q := exportertest.Query(1)
	if err := events.Stamp(q, "c"); err != nil {
		b.Fatal(err)
	}
	ev, _ := json.Marshal(q)
	env, err := format.Scan(ev)
	if err != nil {
		b.Fatal(err)
	}
	return exporters.Record{Envelope: env, Event: ev, Data: ev}
}

// FuzzAppendEvent: whatever the envelope holds, the event object is one
// JSON object the strict collector accepts, carrying the event verbatim.
func FuzzAppendEvent(f *testing.F) {
	f.Add("01J0ABC", "db.session.query", "TGDB002I", "prod", int64(1700000000123456789))
	f.Add("a\"b\\c\n", "x.y", "", "é\x00", int64(-5))
	s, err := splunk.New(splunk.Config{URL: "http://127.0.0.1:1", Token: token, Host: "h\"1", Index: "i"})
	if err != nil {
		f.Fatal(err)
	}
	data := []byte(`{"id":"x","n":[1,2]}`)
	f.Fuzz(func(t *testing.T, id, typ, code, cluster string, ns int64) {
		r := exporters.Record{Envelope: format.Envelope{ID: id, Type: typ, Code: code, Cluster: cluster, Time: time.Unix(0, ns)}, Data: data}
		out := s.AppendEvent(nil, &r)
		var o struct {
			Time   json.Number
			Host   string
			Event  json.RawMessage
			Fields map[string]string
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.UseNumber()
		if err := dec.Decode(&o); err != nil {
			t.Fatalf("not JSON: %v: %q", err, out)
		}
		if dec.More() {
			t.Fatalf("more than one object: %q", out)
		}
		var wantType string
		jt, _ := json.Marshal(typ)
		_ = json.Unmarshal(jt, &wantType)
		if string(o.Event) != string(data) || o.Host != "h\"1" || o.Fields["event_type"] != wantType {
			t.Fatalf("round trip: %q", out)
		}
		sec, err := o.Time.Float64()
		if err != nil || int64(sec) != r.Time.Unix() && int64(sec)+1 != r.Time.Unix() && int64(sec)-1 != r.Time.Unix() {
			t.Fatalf("time %s for %d", o.Time, ns)
		}
	})
}

// An event larger than the collector takes (413) is dead-lettered alone;
// the events around it are indexed.
func TestOversizedEvent(t *testing.T) {
	hec := fakehec.New(t, fakehec.Options{Token: token, MaxBody: 1 << 20})
	e := exportertest.Start(t, exportertest.Options{MaxPayload: 4 << 20})
	ids := e.Fill(t, 300, func(i int) events.Event {
		q := exportertest.Query(i)
		if i == 150 {
			q.Query = "SELECT '" + strings.Repeat("q", 3<<19) + "'"
		}
		return q
	})
	_, _ = e.Run(t, fmt.Sprintf("name: hecbig\ntype: splunk_hec\nsettings:\n  url: %s\n  token: %s\n  linger: 20ms", hec.URL, token))
	e.Settled(t, "hecbig", 60*time.Second)
	got := checkAll(t, hec, append(append([]string(nil), ids[:150]...), ids[151:]...))
	if _, ok := got[ids[150]]; ok {
		t.Fatal("the oversized event was indexed")
	}
	dl := e.DeadLetters(t, "hecbig")
	if len(dl) != 1 || dl[0].Header.Get("Tollgate-Event-Id") != ids[150] || !strings.Contains(dl[0].Header.Get("Tollgate-Reason"), "413") {
		t.Fatalf("dead letters: %d", len(dl))
	}
}
