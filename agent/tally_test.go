package agent_test

import (
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent"
)

func TestTallyKeepsTheFirstReason(t *testing.T) {
	tl := &agent.Tally{Started: time.Now().Add(-time.Second)}
	tl.Statements.Add(3)
	tl.Rows.Add(7)
	tl.Errors.Add(1)
	tl.BytesIn.Add(10)
	tl.BytesOut.Add(20)
	tl.SetReason("locked")
	tl.SetReason("idle timeout")
	end := tl.End("client closed the connection")
	if end.Reason != "locked" {
		t.Errorf("reason %q, want the first one set, locked", end.Reason)
	}
	if end.Statements != 3 || end.Rows != 7 || end.Errors != 1 || end.BytesIn != 10 || end.BytesOut != 20 {
		t.Errorf("counts %+v, want 3 statements, 7 rows, 1 error, 10 in, 20 out", end)
	}
	if end.DurationNs < int64(time.Second) {
		t.Errorf("duration %dns, want at least the second since Started", end.DurationNs)
	}
	if got := (&agent.Tally{}).End("client closed the connection").Reason; got != "client closed the connection" {
		t.Errorf("reason %q, want End's own when none was set", got)
	}
}
