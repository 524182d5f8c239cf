package exporters_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/exporters/internal/exportertest"
	"github.com/tollgate-db/tollgate/exporters/internal/fakehec"
	_ "github.com/tollgate-db/tollgate/exporters/splunk"
)

// The exporter process is killed (SIGKILL) in the middle of the stream,
// then stopped cleanly (SIGTERM) in the middle of the rest, then run to
// the end: every event reaches the collector at least once, and an event
// delivered twice is the same event under the same id. The events are
// stored one per message, or in frames (killed mid-frame, a frame's
// events come again).
func TestCrashAndRestart(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		crashAndRestart(t, func(e *exportertest.Env) []string { return e.Fill(t, 20000, nil) })
	})
	t.Run("frames", func(t *testing.T) {
		crashAndRestart(t, func(e *exportertest.Env) []string { return e.FillFrames(t, 20000, nil) })
	})
}

func crashAndRestart(t *testing.T, fill func(*exportertest.Env) []string) {
	const token = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	hec := fakehec.New(t, fakehec.Options{Token: token, Ack: true})
	e := exportertest.Start(t, exportertest.Options{})
	ids := fill(e)
	conf := fmt.Sprintf(`name: crash
type: splunk_hec
settings:
  url: %s
  token: %s
  ack: true
  ack_poll_interval: 5ms
  batch_size: 200
  linger: 20ms
  ack_wait: 2s`, hec.URL, token)
	waitCount := func(n int) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for hec.Count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d events indexed after 60s, waiting for %d", hec.Count(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	c1 := exportertest.StartChild(t, e.NATS.URL(), conf)
	waitCount(4000)
	c1.Kill()
	atKill := hec.Count()
	c2 := exportertest.StartChild(t, e.NATS.URL(), conf)
	waitCount(atKill + 4000)
	c2.Stop(t)
	exportertest.StartChild(t, e.NATS.URL(), conf)
	e.Settled(t, "crash", 120*time.Second)
	got := hec.Indexed()
	copies := 0
	for _, id := range ids {
		c := got[id]
		if len(c) == 0 {
			t.Fatalf("event %s lost (%d of %d indexed)", id, len(got), len(ids))
		}
		for _, d := range c[1:] {
			if !bytes.Equal(d, c[0]) {
				t.Fatalf("event %s delivered twice with different contents", id)
			}
		}
		copies += len(c)
	}
	if v := hec.Violations(); len(v) > 0 {
		t.Fatalf("protocol violations: %v", v)
	}
	t.Logf("%d events, %d copies indexed (%d duplicates after the crash and the restart); %d indexed when killed", len(ids), copies, copies-len(ids), atKill)
}
