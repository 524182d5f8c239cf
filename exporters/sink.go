package exporters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/tollgate-db/tollgate/exporters/format"
)

// Record is one event on its way to a sink.
type Record struct {
	// Envelope is what Scan read from the event: id, type, code, time…
	format.Envelope
	// Stream and Subject say where the event is stored: for an event of
	// a frame, Subject is the one it would have had as a message of its
	// own (audit.<cluster>.<sid or _>.<type>), not the frame's. Seq, the
	// sequence of its message in the stream, is set on dead-lettered
	// records only.
	Stream  string
	Subject string
	Seq     uint64
	// Event is the event's bytes as stored (native JSON): a whole message,
	// or one line of a frame.
	Event []byte
	// Data is the event in the exporter's format: what the sink sends.
	Data []byte
}

// Sink delivers records to one destination. Adding a destination is one
// file with a type implementing Sink and an init function calling Register.
//
// Deliver sends a batch and returns once the destination confirmed it
// (HTTP 2xx or indexer acknowledgement, Kafka acks=all, bytes acknowledged
// by the peer's TCP stack, fsync). The exporter acknowledges the events to
// JetStream only then. Deliver reports failure in one of three ways:
//   - RecordErrors: the records it lists failed (each retried, or
//     dead-lettered when Permanent); every other record was delivered;
//   - Permanent(err): the destination refused the batch for good without
//     saying which record it objects to; the exporter splits the batch
//     until it finds the records to dead-letter;
//   - any other error: nothing is known to be delivered; the whole batch
//     is retried after a backoff.
//
// The exporter calls Deliver from one goroutine at a time (unless the sink
// is a ConcurrentSink), never with an empty batch, and does not reuse recs
// or the bytes they hold while Deliver runs.
type Sink interface {
	Deliver(ctx context.Context, recs []Record) error
	Close() error
}

// ConcurrentSink is a Sink whose Deliver may run for several batches at
// once, hiding the destination's latency (an HTTP or produce round trip).
// Concurrency is how many by default (the concurrency setting overrides
// it). Batches then complete out of order, as they may anyway after a
// retry.
type ConcurrentSink interface {
	Sink
	Concurrency() int
}

// permanent marks an error that retrying cannot fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent wraps err to say that the record or batch it concerns will
// never be accepted: the exporter dead-letters it instead of retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent reports whether err was wrapped by Permanent.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}

// RecordErrors lists the records of a batch that failed, by index in the
// batch given to Deliver; records not listed were delivered.
type RecordErrors map[int]error

func (r RecordErrors) Error() string {
	idx := make([]int, 0, len(r))
	for i := range r {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var b strings.Builder
	b.WriteString(strconv.Itoa(len(r)))
	b.WriteString(" records failed")
	for n, i := range idx {
		if n == 3 {
			b.WriteString("; …")
			break
		}
		fmt.Fprintf(&b, "; record %d: %v", i, r[i])
	}
	return b.String()
}

// Params is what a sink's constructor receives.
type Params struct {
	// Name is the exporter's name.
	Name string
	// Log reports the sink's own events.
	Log *slog.Logger
	// settings holds the sink's own keys of the exporter's settings (the
	// delivery keys taken out); where says where they are in the file.
	settings *yaml.Node
	where    string
	decoded  *bool
	// checkOnly makes Decode stop the factory once the settings decoded,
	// before it builds the sink (which may open a file or dial): Check
	// validates the keys and their types without side effects.
	checkOnly bool
}

// errSettingsChecked is what Decode returns under checkOnly when the
// settings decoded: every factory returns Decode's error before building.
var errSettingsChecked = errors.New("exporters: settings checked")

// Decode decodes the sink's settings into v strictly: a key v has no field
// for, or a value of the wrong type, is an error naming the key and its
// line. A sink that never calls Decode takes no settings: any key it is
// given is an error.
func (p Params) Decode(v any) error {
	if p.decoded != nil {
		*p.decoded = true
	}
	if err := decodeStrict(p.settings, v, p.where); err != nil {
		return err
	}
	if p.checkOnly {
		return errSettingsChecked
	}
	return nil
}

// NewParams is Params for settings given as a YAML node (tests and callers
// that build sinks without a configuration file).
func NewParams(name string, settings *yaml.Node, log *slog.Logger) Params {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return Params{Name: name, Log: log, settings: settings, where: "settings"}
}

// Factory builds a sink from its settings.
type Factory func(ctx context.Context, p Params) (Sink, error)

var (
	sinksMu sync.RWMutex
	sinks   = map[string]Factory{}
)

// Register makes a sink type available to the configuration under typ. It
// panics on a duplicate: registration happens in init functions.
func Register(typ string, f Factory) {
	sinksMu.Lock()
	defer sinksMu.Unlock()
	if _, dup := sinks[typ]; dup {
		panic("exporters: sink type registered twice: " + typ)
	}
	sinks[typ] = f
}

// Types lists the registered sink types, sorted.
func Types() []string {
	sinksMu.RLock()
	defer sinksMu.RUnlock()
	out := make([]string, 0, len(sinks))
	for t := range sinks {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

func factory(typ string) (Factory, bool) {
	sinksMu.RLock()
	defer sinksMu.RUnlock()
	f, ok := sinks[typ]
	return f, ok
}
