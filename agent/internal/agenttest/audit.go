// Package agenttest holds what the engines' end-to-end tests share: reading
// the audit stream back, waiting on it, and checking its events.
package agenttest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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
	ctx := context.Background()
	st, err := js.Stream(ctx, events.AuditStream)
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
		if err := schemas.Validate(m.Data); err != nil {
			t.Fatalf("event %d does not match its schema: %v\n%s", seq, err, m.Data)
		}
		var ev map[string]any
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		out = append(out, ev)
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
			continue // outside any session: no index to check
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

// WriteFile writes b to dir/name, readable by its owner only, and returns
// the path.
func WriteFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
