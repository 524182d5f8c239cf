package agent_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
)

type discardRecorder struct{}

func (discardRecorder) Publish(context.Context, events.Event) error        { return nil }
func (discardRecorder) PublishBatch(context.Context, []events.Event) error { return nil }

// BenchmarkSessionStatement measures the session's share of one statement
// in a busy strict session: the previous statement's result is emitted
// from the server side, then the next statement's event is gated and
// carries it to the recorder.
func BenchmarkSessionStatement(b *testing.B) {
	db, err := agent.NewDatabase(config.Database{Name: "pg", Protocol: "postgres", URI: "h:1"})
	if err != nil {
		b.Fatal(err)
	}
	s := agent.NewSession(agent.SessionOptions{Cluster: "c", Recorder: discardRecorder{}, Database: db, DBUser: "app", DBName: "app"})
	defer s.Close(nil)
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		if err := s.Emit(&events.Result{Status: events.Status{Success: true}, Rows: 1, CommandTag: "SELECT 1"}); err != nil {
			b.Fatal(err)
		}
		if err := s.Gate(ctx, &events.PostgresExecute{StatementName: "P0_1", Query: "SELECT abalance FROM pgbench_accounts WHERE aid = $1;", Parameters: []string{"73412"}}); err != nil {
			b.Fatal(err)
		}
	}
	// The process's CPU time, not the loop's wall time: it includes the
	// background publisher and timers the statement wakes on other cores.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
