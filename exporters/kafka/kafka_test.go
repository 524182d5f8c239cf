package kafka_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters/internal/exportertest"
	"github.com/tollgate-db/tollgate/exporters/internal/testpki"
	_ "github.com/tollgate-db/tollgate/exporters/kafka"
)

const topic = "tollgate-audit"

func cluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(3, topic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// readBack consumes the topic from the start with franz-go until it has
// want distinct keys or the time is up; it returns every record by key.
func readBack(t *testing.T, want int, opts ...kgo.Opt) map[string][][]byte {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := map[string][][]byte{}
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			got[string(r.Key)] = append(got[string(r.Key)], r.Value)
		})
	}
	return got
}

// checkKeyedByID checks that every record's key is the id of the event it
// holds, and that every id is there.
func checkKeyedByID(t *testing.T, got map[string][][]byte, ids []string) {
	t.Helper()
	for key, vals := range got {
		for _, v := range vals {
			var ev struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(v, &ev); err != nil {
				t.Fatalf("record %s: value is not JSON: %v", key, err)
			}
			if ev.ID != key {
				t.Fatalf("record keyed %s holds event %s", key, ev.ID)
			}
		}
	}
	for _, id := range ids {
		if _, ok := got[id]; !ok {
			t.Fatalf("event %s is not in the topic (%d of %d records there)", id, len(got), len(ids))
		}
	}
}

// The events are stored one per message, or in frames.
func TestEveryEventKeyedByID(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		everyEventKeyedByID(t, func(e *exportertest.Env) []string { return e.Fill(t, 3000, nil) })
	})
	t.Run("frames", func(t *testing.T) {
		everyEventKeyedByID(t, func(e *exportertest.Env) []string { return e.FillFrames(t, 3000, nil) })
	})
}

func everyEventKeyedByID(t *testing.T, fill func(*exportertest.Env) []string) {
	c := cluster(t)
	e := exportertest.Start(t, exportertest.Options{})
	ids := fill(e)
	x, _ := e.Run(t, fmt.Sprintf(`name: kafka1
type: kafka
settings:
  brokers: [%q]
  topic: %s
  linger: 50ms`, c.ListenAddrs()[0], topic))
	e.Settled(t, "kafka1", 60*time.Second)
	got := readBack(t, len(ids), kgo.SeedBrokers(c.ListenAddrs()...))
	checkKeyedByID(t, got, ids)
	if st := x.Stats(); st.Delivered < uint64(len(ids)) || st.DeadLetters != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTLSAndSCRAM(t *testing.T) {
	pki := testpki.New(t)
	c := cluster(t, kfake.TLS(pki.ServerConfig()), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-256", "exporter", "s3cret-pw"), kfake.Superuser("PLAIN", "plainuser", "plain-pw"))
	e := exportertest.Start(t, exportertest.Options{})
	ids := e.Fill(t, 500, nil)
	for _, sasl := range []string{
		"mechanism: SCRAM-SHA-256\n    username: exporter\n    password: s3cret-pw",
		"mechanism: PLAIN\n    username: plainuser\n    password: plain-pw",
	} {
		name := "k" + strings.ToLower(strings.Fields(sasl)[1][:5])
		_, stop := e.Run(t, fmt.Sprintf(`name: %s
type: kafka
settings:
  brokers: [%q]
  topic: %s
  linger: 50ms
  tls:
    ca_file: %s
  sasl:
    %s`, name, c.ListenAddrs()[0], topic, pki.CAFile, sasl))
		e.Settled(t, name, 60*time.Second)
		stop()
	}
	got := readBack(t, len(ids), kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.DialTLSConfig(&tls.Config{RootCAs: pki.Pool}),
		kgo.SASL(scram.Auth{User: "exporter", Pass: "s3cret-pw"}.AsSha256Mechanism()))
	checkKeyedByID(t, got, ids)
	for _, id := range ids {
		if n := len(got[id]); n != 2 {
			t.Fatalf("event %s: %d records, want 2 (one per exporter)", id, n)
		}
	}
}

// A wrong password is never a reason to drop events: the exporter retries
// and nothing is acknowledged.
func TestWrongPasswordRetries(t *testing.T) {
	c := cluster(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "u", "right"))
	e := exportertest.Start(t, exportertest.Options{})
	e.Fill(t, 10, nil)
	x, stop := e.Run(t, fmt.Sprintf(`name: kbad
type: kafka
settings:
  brokers: [%q]
  topic: %s
  linger: 20ms
  backoff_min: 20ms
  backoff_max: 100ms
  sasl: {mechanism: PLAIN, username: u, password: wrong}`, c.ListenAddrs()[0], topic))
	deadline := time.Now().Add(20 * time.Second)
	for x.Stats().Retries < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	st := x.Stats()
	if st.Retries < 3 || st.Delivered != 0 || st.DeadLetters != 0 {
		t.Fatalf("stats %+v: want retries and nothing delivered or dead-lettered", st)
	}
	if strings.Contains(st.LastError, "wrong") {
		t.Fatalf("the last error shows the password: %s", st.LastError)
	}
}

// An event over the brokers' limit is dead-lettered; the rest flow.
func TestOversizedEventDeadLettered(t *testing.T) {
	c := cluster(t)
	e := exportertest.Start(t, exportertest.Options{MaxPayload: 4 << 20})
	big := strings.Repeat("x", 3<<19) // 1.5 MiB statement
	ids := e.Fill(t, 200, func(i int) events.Event {
		q := exportertest.Query(i)
		if i == 100 {
			q.Query = "SELECT '" + big + "'"
		}
		return q
	})
	x, _ := e.Run(t, fmt.Sprintf(`name: kbig
type: kafka
settings:
  brokers: [%q]
  topic: %s
  linger: 20ms
  max_message_bytes: 4000000`, c.ListenAddrs()[0], topic))
	e.Settled(t, "kbig", 60*time.Second)
	dl := e.DeadLetters(t, "kbig")
	if len(dl) != 1 || dl[0].Header.Get("Tollgate-Event-Id") != ids[100] || len(dl[0].Data) < 3<<19 {
		t.Fatalf("dead letters: %d, want the 1.5 MiB event %s", len(dl), ids[100])
	}
	if r := dl[0].Header.Get("Tollgate-Reason"); !strings.Contains(strings.ToLower(r), "too large") && !strings.Contains(r, "MESSAGE_TOO_LARGE") {
		t.Fatalf("reason %q does not say the event was too large", r)
	}
	got := readBack(t, len(ids)-1, kgo.SeedBrokers(c.ListenAddrs()...))
	checkKeyedByID(t, got, append(append([]string(nil), ids[:100]...), ids[101:]...))
	if _, ok := got[ids[100]]; ok {
		t.Fatal("the oversized event reached the topic")
	}
	reports := e.AuditEvents(t, "exporter.dead_letter")
	if len(reports) != 1 || !strings.Contains(string(reports[0]), ids[100]) {
		t.Fatalf("exporter.dead_letter events: %d, want one naming %s", len(reports), ids[100])
	}
	if st := x.Stats(); st.DeadLetters != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMain(m *testing.M) {
	exportertest.MaybeChild()
	os.Exit(m.Run())
}

// BenchmarkDrain drains a stream of TOLLGATE_BENCH_EVENTS events (100,000
// by default; the figures in the notes use 1,000,000) through the Kafka
// sink, run in a child process against an in-process kfake broker.
func BenchmarkDrain(b *testing.B) {
	n := exportertest.BenchEvents(100000)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	e := exportertest.Start(b, exportertest.Options{})
	e.Fill(b, n, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("bench%d", i)
		took, rss := e.Drain(b, name, fmt.Sprintf(`name: %s
type: kafka
settings:
  brokers: [%q]
  topic: %s`, name, c.ListenAddrs()[0], topic))
		exportertest.Report(b, n, took, rss)
	}
}
