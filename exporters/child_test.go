package exporters_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/tollgate-db/tollgate/exporters"
	"github.com/tollgate-db/tollgate/exporters/internal/exportertest"
)

// nullSink confirms everything at once: the framework's own cost.
type nullSink struct{}

func (nullSink) Deliver(context.Context, []exporters.Record) error { return nil }
func (nullSink) Close() error                                      { return nil }

func init() {
	exporters.Register("discard", func(context.Context, exporters.Params) (exporters.Sink, error) { return nullSink{}, nil })
}

func mainWithChild(m *testing.M) {
	exportertest.MaybeChild()
	os.Exit(m.Run())
}

// BenchmarkDrainNull drains TOLLGATE_BENCH_EVENTS events through a sink
// that confirms at once: the cost of fetching, reading, acknowledging.
func BenchmarkDrainNull(b *testing.B) {
	n := exportertest.BenchEvents(100000)
	e := exportertest.Start(b, exportertest.Options{})
	e.Fill(b, n, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("null%d", i)
		took, rss := e.Drain(b, name, fmt.Sprintf("name: %s\ntype: discard", name))
		exportertest.Report(b, n, took, rss)
	}
}

// BenchmarkDrainNullFrames is BenchmarkDrainNull over events stored in
// frames of 1 to 100 (and now and then alone).
func BenchmarkDrainNullFrames(b *testing.B) {
	n := exportertest.BenchEvents(100000)
	e := exportertest.Start(b, exportertest.Options{})
	e.FillFrames(b, n, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("nullf%d", i)
		took, rss := e.Drain(b, name, fmt.Sprintf("name: %s\ntype: discard", name))
		exportertest.Report(b, n, took, rss)
	}
}
