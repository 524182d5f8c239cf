package exporters

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// setup creates the consumers, the dead-letter stream and the stats bucket.
func (x *Exporter) setup(ctx context.Context) error {
	var err error
	for attempt := 0; ; attempt++ {
		if err = x.setupOnce(ctx); err == nil {
			return nil
		}
		if ctx.Err() != nil || attempt >= 5 {
			return fmt.Errorf("exporters: %s: %w", x.o.Name, err)
		}
		x.log.Warn("exporter setup failed; retrying", "err", err)
		if !sleep(ctx, x.backoff(attempt)) {
			return fmt.Errorf("exporters: %s: %w", x.o.Name, err)
		}
	}
}

func (x *Exporter) setupOnce(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	replicas := x.o.Replicas
	if replicas < 1 {
		replicas = 1
	}
	var err error
	_, err = x.o.JS.CreateOrUpdateStream(sctx, jetstream.StreamConfig{
		Name:        DeadLetterStream,
		Description: "Events an exporter's sink rejected for good: deadletter.<exporter>.<stream>",
		Subjects:    []string{"deadletter.>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		Duplicates:  events.DefaultDuplicates,
		Replicas:    replicas,
		AllowDirect: true,
	})
	if err != nil {
		return fmt.Errorf("dead-letter stream %s: %w", DeadLetterStream, err)
	}
	if x.kv, err = statsBucket(sctx, x.o.JS, replicas); err != nil {
		return fmt.Errorf("stats bucket %s: %w", StatsBucket, err)
	}
	for _, s := range x.d.Streams {
		if _, err := x.consumer(sctx, s, true); err != nil {
			return err
		}
	}
	return nil
}

// consumerConfig is the durable consumer of stream: it reads every
// subject, and the exporter filters events after reading them.
func (x *Exporter) consumerConfig(stream string) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:     ConsumerName(x.o.Name),
		Description: fmt.Sprintf("Tollgate exporter %s (%s)", x.o.Name, x.o.SinkType),
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     x.d.AckWait.Std(),
		// Never give up on an event: a sink that is down for a day gets
		// every event when it is back.
		MaxDeliver: -1,
		// Each replica holds a few batches unacknowledged (buffered,
		// queued, being delivered); room for several replicas. Counted in
		// messages: a frame of many events is one.
		MaxAckPending: 20 * x.d.BatchSize,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if x.d.Start == "new" {
		c.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	// No subject filter, even with Filter.Types: a frame (audit.<cluster>.
	// frame.<src>) holds events of every type, so types are matched on
	// each event after the split. Filters on the types of single-event
	// subjects could not sit beside audit.*.frame.> either: the server
	// refuses overlapping filters, and a type pattern ending in > overlaps
	// it. An exporter made by an older version loses its filter subjects
	// on the update below.
	return c
}

// consumer returns the durable consumer of stream, creating or updating it
// when asked (or when it is gone). An existing consumer keeps where it
// started.
func (x *Exporter) consumer(ctx context.Context, stream string, refresh bool) (jetstream.Consumer, error) {
	x.consumersMu.Lock()
	defer x.consumersMu.Unlock()
	if c, ok := x.consumers[stream]; ok && !refresh {
		return c, nil
	}
	st, err := x.o.JS.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	cfg := x.consumerConfig(stream)
	var c jetstream.Consumer
	if cur, err := st.Consumer(ctx, cfg.Durable); err == nil {
		old := cur.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = old.DeliverPolicy, old.OptStartSeq, old.OptStartTime
		c, err = st.UpdateConsumer(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("update consumer %s of %s: %w", cfg.Durable, stream, err)
		}
	} else if errors.Is(err, jetstream.ErrConsumerNotFound) {
		c, err = st.CreateOrUpdateConsumer(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("create consumer %s of %s: %w", cfg.Durable, stream, err)
		}
	} else {
		return nil, fmt.Errorf("consumer %s of %s: %w", cfg.Durable, stream, err)
	}
	x.consumers[stream] = c
	return c, nil
}
