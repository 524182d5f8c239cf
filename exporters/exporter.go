package exporters

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters/format"
)

// Options configures New.
type Options struct {
	// Name names the exporter: its durable consumers are exporter-<name>,
	// its dead letters deadletter.<name>.<stream>. Letters, digits, '-'
	// and '_'.
	Name string
	// SinkType is the sink's type, for reports (dead-letter events).
	SinkType string
	Sink     Sink
	// Format turns events into what the sink sends; nil is native.
	Format   format.Format
	Filter   Filter
	Delivery Delivery
	JS       jetstream.JetStream
	// Publisher stores the exporter.dead_letter events.
	Publisher *events.Publisher
	Log       *slog.Logger
	// Metrics, when set, receive the exporter's counters.
	Metrics *Metrics
	// Replicas of the DEADLETTER stream and the stats bucket when the
	// exporter creates them (1 when zero).
	Replicas int
}

// Exporter delivers the events of AUDIT and STATE to one sink through a
// durable JetStream pull consumer per stream, at least once: a message is
// acknowledged only after the sink confirmed its event (every event, for a
// frame), or after it was stored in the DEADLETTER stream. Several processes running the same exporter share
// its consumers, and so its work.
type Exporter struct {
	o          Options
	d          Delivery
	log        *slog.Logger
	native     bool
	readsState bool // STATE is exported: its AUDIT copies are skipped
	batchBytes int
	c          counters
	work       chan *work
	kv         jetstream.KeyValue

	consumersMu sync.Mutex
	consumers   map[string]jetstream.Consumer
}

// New checks the options; Run does the work.
func New(o Options) (*Exporter, error) {
	if !nameRE.MatchString(o.Name) {
		return nil, fmt.Errorf("exporters: name %q: want 1 to 64 letters, digits, '-' or '_'", o.Name)
	}
	if o.Sink == nil {
		return nil, fmt.Errorf("exporters: %s: no sink", o.Name)
	}
	if o.JS == nil {
		return nil, fmt.Errorf("exporters: %s: no JetStream", o.Name)
	}
	if o.Publisher == nil {
		return nil, fmt.Errorf("exporters: %s: no publisher for dead-letter events", o.Name)
	}
	if o.Format == nil {
		o.Format, _ = format.New(format.Native, format.Options{})
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if err := o.Filter.validate(); err != nil {
		return nil, fmt.Errorf("exporters: %s: %w", o.Name, err)
	}
	d := o.Delivery
	cs, concurrent := o.Sink.(ConcurrentSink)
	if d.Concurrency == 0 && concurrent {
		d.Concurrency = cs.Concurrency()
	}
	d.fillDefaults()
	if err := d.validate(); err != nil {
		return nil, fmt.Errorf("exporters: %s: %w", o.Name, err)
	}
	if d.Concurrency > 1 && !concurrent {
		return nil, fmt.Errorf("exporters: %s: concurrency %d: sink %s delivers one batch at a time", o.Name, d.Concurrency, o.SinkType)
	}
	x := &Exporter{
		o:         o,
		d:         d,
		log:       o.Log.With("exporter", o.Name, "sink", o.SinkType),
		native:    o.Format.Name() == format.Native,
		work:      make(chan *work, d.Concurrency),
		consumers: map[string]jetstream.Consumer{},
	}
	x.readsState = slices.Contains(d.Streams, events.StateStream)
	x.batchBytes = d.BatchBytes
	if mp := int(o.JS.Conn().MaxPayload()) + 64<<10; x.batchBytes < mp {
		// A fetch that cannot hold the next event would never get it.
		x.batchBytes = mp
	}
	return x, nil
}

// Name is the exporter's name.
func (x *Exporter) Name() string { return x.o.Name }

// Stats returns what this process of the exporter did since it started.
func (x *Exporter) Stats() Stats { return x.c.snapshot() }

// ConsumerName is the durable consumer of the exporter called name.
func ConsumerName(name string) string { return ConsumerPrefix + name }

// DeadLetterStream holds the events sinks rejected for good, under
// deadletter.<exporter>.<stream>.
const DeadLetterStream = "DEADLETTER"

// DeadLetterSubject is where exporter name stores what it could not
// deliver from stream.
func DeadLetterSubject(name, stream string) string { return "deadletter." + name + "." + stream }

// Run delivers until ctx ends, then stops fetching, lets the delivery
// under way finish (ShutdownGrace), hands back what it holds unconfirmed
// and closes the sink. It returns an error only if it could not start.
// An Exporter runs once.
func (x *Exporter) Run(ctx context.Context) error {
	defer func() {
		if err := x.o.Sink.Close(); err != nil {
			x.log.Warn("closing the sink", "err", err)
		}
	}()
	if err := x.setup(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	x.log.Info("exporter started", "streams", x.d.Streams, "format", x.o.Format.Name(), "batch_size", x.d.BatchSize)

	// hard ends ShutdownGrace after ctx: a delivery under way may finish.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stopGrace := context.AfterFunc(ctx, func() {
		t := time.NewTimer(x.d.ShutdownGrace.Std())
		defer t.Stop()
		select {
		case <-t.C:
			cancelHard()
		case <-hard.Done():
		}
	})
	defer stopGrace()

	var fetchers sync.WaitGroup
	for _, s := range x.d.Streams {
		fetchers.Go(func() { x.fetchLoop(ctx, s) })
	}
	var deliverers sync.WaitGroup
	for range x.d.Concurrency {
		deliverers.Go(func() {
			for w := range x.work {
				x.process(ctx, hard, w)
			}
		})
	}
	var aux sync.WaitGroup
	aux.Go(func() { x.statsLoop(ctx) })

	<-ctx.Done()
	fetchers.Wait()
	close(x.work)
	deliverers.Wait()
	aux.Wait()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := flushStats(fctx, x.kv, x.o.Name, &x.c); err != nil {
		x.log.Warn("saving the exporter's counters", "err", err)
	}
	st := x.c.snapshot()
	x.log.Info("exporter stopped", "delivered", st.Delivered, "retries", st.Retries, "dead_letters", st.DeadLetters)
	return nil
}

// statsLoop saves the counters every few seconds and follows the lag.
func (x *Exporter) statsLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := flushStats(fctx, x.kv, x.o.Name, &x.c); err != nil && ctx.Err() == nil {
			x.log.Debug("saving the exporter's counters", "err", err)
		}
		if x.o.Metrics != nil {
			for _, s := range x.d.Streams {
				c, err := x.consumer(fctx, s, false)
				if err != nil {
					continue
				}
				if ci, err := c.Info(fctx); err == nil {
					x.o.Metrics.lag.WithLabelValues(x.o.Name, s).Set(float64(ci.NumPending + uint64(ci.NumAckPending)))
				}
			}
		}
		cancel()
	}
}
