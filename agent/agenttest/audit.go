// Package agenttest is the world the agent's end-to-end tests run in, for
// tests only: Stack starts Tollgate's authorities, an embedded JetStream
// with the audit publisher and agents in front of the real databases the
// tests start, and the rest of the package mints certificates, reads the
// audit stream back, waits on it and checks its events. It lives outside
// agent/internal so that the benchmarks and the fault campaign under
// test/ build the same world with it; no program imports it.
package agenttest

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/schemas"
)

// Audit reads every event stored so far, as JSON objects, in stream order;
// each must validate against its checked-in schema.
func Audit(t testing.TB, js jetstream.JetStream) []map[string]any {
	t.Helper()
	return Stored(t, js, events.AuditStream)
}

// Stored reads every event of a stream (AUDIT or STATE) stored so far, as
// JSON objects, in stream order, each validated against its schema. An
// AUDIT message is a frame of many events or one event on its own: each
// event counts.
func Stored(t testing.TB, js jetstream.JetStream, stream string) []map[string]any {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		err = events.SplitEvents(m.Data, func(data []byte) error {
			if err := schemas.Validate(data); err != nil {
				return fmt.Errorf("an event does not match its schema: %w\n%s", err, data)
			}
			var ev map[string]any
			if err := json.Unmarshal(data, &ev); err != nil {
				return err
			}
			out = append(out, ev)
			return nil
		})
		if err != nil {
			t.Fatalf("%s sequence %d: %v", stream, seq, err)
		}
	}
	return out
}

// WaitAudit polls the stream until cond holds on it. A timeout fails the
// test with the count of events by type and the last ones stored.
func WaitAudit(t testing.TB, js jetstream.JetStream, what string, cond func([]map[string]any) bool) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		evs := Audit(t, js)
		if cond(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			types := map[string]int{}
			for _, ev := range evs {
				types[fmt.Sprint(ev["type"])]++
			}
			for _, ev := range evs[max(0, len(evs)-10):] {
				t.Logf("%.400v", ev)
			}
			t.Fatalf("timed out waiting for %s; events by type: %v", what, types)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// OfType is the events of type typ, in order.
func OfType(evs []map[string]any, typ string) []map[string]any {
	var out []map[string]any
	for _, ev := range evs {
		if ev["type"] == typ {
			out = append(out, ev)
		}
	}
	return out
}

// Count is a WaitAudit condition: at least n events of type typ.
func Count(typ string, n int) func([]map[string]any) bool {
	return func(evs []map[string]any) bool { return len(OfType(evs, typ)) >= n }
}

// CheckGapless asserts that every session's ei run 0..n-1 with no gap or
// duplicate.
func CheckGapless(t testing.TB, evs []map[string]any) {
	t.Helper()
	if err := Gapless(evs); err != nil {
		t.Fatal(err)
	}
}

// Gapless says which session's ei do not run 0..n-1, if any.
func Gapless(evs []map[string]any) error {
	bySession := map[string][]int{}
	for _, ev := range evs {
		sid, _ := ev["sid"].(string)
		if sid == "" {
			continue // outside any session (db.session.rejected): no ei
		}
		bySession[sid] = append(bySession[sid], int(ev["ei"].(float64)))
	}
	for sid, eis := range bySession {
		sort.Ints(eis)
		for i, ei := range eis {
			if ei != i {
				return fmt.Errorf("session %s: %d events, ei %d at position %d (around: %v)", sid, len(eis), ei, i, eis[max(0, i-3):min(len(eis), i+3)])
			}
		}
	}
	return nil
}
