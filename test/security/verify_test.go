package security

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events/natsserver"
)

// `tollgate audit verify` finds events forged into a session with the
// broker's own NATS identity (the one that may still publish anywhere)
// and names them; an untouched trail verifies clean.
func TestAuditVerifyFindsForgedEvents(t *testing.T) {
	w := newWorld(t)
	for i := range 3 {
		if err := w.query(w.userCert, w.userKey, fmt.Sprintf("SELECT %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the sessions have ended (their end events stored).
	var ends []map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for len(ends) < 3 {
		out, err := w.stdout("audit", "tail", "--type=db.session.end")
		if err != nil {
			t.Fatalf("audit tail: %v\n%s", err, out)
		}
		ends = ends[:0]
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var ev map[string]any
			if json.Unmarshal([]byte(l), &ev) == nil {
				ends = append(ends, ev)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d session ends stored, want 3", len(ends))
		}
	}
	out, err := w.stdout("audit", "verify")
	if err != nil || !strings.HasPrefix(out, "intact: ") {
		t.Fatalf("untouched trail: %v\n%s", err, out)
	}
	if !strings.Contains(out, "3 ended") {
		t.Fatalf("summary: %s", out)
	}

	sid := ends[0]["sid"].(string)
	endEI := int(ends[0]["ei"].(float64))
	_, js, _ := w.as(natsserver.Broker)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	forge := func(id string, ei int) {
		ev := fmt.Sprintf(`{"id":%q,"type":"db.session.query","code":"TGDB002I","time":%q,"cluster":"faults","sid":%q,"ei":%d,"db_query":"DROP TABLE pgbench_accounts"}`,
			id, time.Now().UTC().Format(time.RFC3339Nano), sid, ei)
		if _, err := js.Publish(ctx, "audit.faults."+sid+".db.session.query", []byte(ev)); err != nil {
			t.Fatal(err)
		}
	}
	forge("01FORGEDTAKENEI00000000000", 1)
	forge("01FORGEDAFTEREND0000000000", endEI+1)
	out, err = w.stdout("audit", "verify")
	if err == nil {
		t.Fatalf("verify passed a forged trail:\n%s", out)
	}
	for _, want := range []string{"01FORGEDTAKENEI00000000000", "ei 1 is held by two events", "after the session's end", "session " + sid} {
		if !strings.Contains(out, want) {
			t.Fatalf("verify output lacks %q:\n%s", want, out)
		}
	}
	// One session checked alone, and a session left alone stays clean.
	other := ends[1]["sid"].(string)
	if out, err := w.stdout("audit", "verify", "--session", other); err != nil || !strings.HasPrefix(out, "intact: ") {
		t.Fatalf("verify --session %s: %v\n%s", other, err, out)
	}
}
