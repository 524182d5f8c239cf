package exporters

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters/format"
)

// work is one fetched batch on its way to the sink.
type work struct {
	stream string
	recs   []Record
	items  []*item // items[i] holds the message of recs[i]
	poison []poison
	stop   chan struct{} // ends the keep-alive
	once   sync.Once
}

// item is one fetched message and whether it is settled: acknowledged
// after delivery or after dead-lettering. Sub-batches share items, so what
// a retry settles is settled for the whole batch.
type item struct {
	msg     jetstream.Msg
	settled bool
}

// poison is an event that cannot be delivered in any form.
type poison struct {
	rec  Record
	item *item
	err  error
}

func (w *work) done() { w.once.Do(func() { close(w.stop) }) }

// fetchLoop reads one stream until ctx ends: a Consume keeps pull
// requests outstanding so the server streams events while earlier batches
// are delivered; batchLoop cuts them into batches.
func (x *Exporter) fetchLoop(ctx context.Context, stream string) {
	for attempt := 0; ctx.Err() == nil; {
		cons, err := x.consumer(ctx, stream, false)
		if err != nil {
			x.log.Warn("consumer unavailable", "stream", stream, "err", err)
			if !sleep(ctx, x.backoff(attempt)) {
				return
			}
			attempt++
			continue
		}
		in := make(chan jetstream.Msg, x.d.BatchSize)
		stop := make(chan struct{})
		lost := make(chan error, 1)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			select {
			case <-stop:
				_ = m.Nak()
				return
			default:
			}
			select {
			case in <- m:
			case <-stop:
				_ = m.Nak()
			}
		},
			// Two batches in the client's buffer at most, by count and by
			// bytes (never less than one message of the largest size).
			jetstream.PullMaxMessagesWithBytesLimit(2*x.d.BatchSize, 2*x.batchBytes),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
					select {
					case lost <- err:
					default:
					}
					return
				}
				x.log.Debug("consume", "stream", stream, "err", err)
			}))
		if err != nil {
			x.log.Warn("consume failed", "stream", stream, "err", err)
			if !sleep(ctx, x.backoff(attempt)) {
				return
			}
			attempt++
			continue
		}
		attempt = 0
		lostErr := x.batchLoop(ctx, stream, in, lost)
		close(stop)
		cc.Stop()
		for {
			select {
			case m := <-in:
				_ = m.Nak()
				continue
			default:
			}
			break
		}
		if lostErr != nil {
			// Someone deleted the consumer: make it again. It starts over
			// per Start, which may deliver events twice, never lose them.
			x.log.Warn("consumer lost; making it again", "stream", stream, "err", lostErr)
			x.consumersMu.Lock()
			delete(x.consumers, stream)
			x.consumersMu.Unlock()
			if !sleep(ctx, x.backoff(0)) {
				return
			}
		}
	}
}

// batchLoop cuts the stream of messages into batches: a batch is sent on
// when it is full (BatchSize, BatchBytes), when Linger passed since its
// first message, or at once when the stream has nothing more for now. It
// returns when ctx ends (nil) or the consumer is lost.
func (x *Exporter) batchLoop(ctx context.Context, stream string, in <-chan jetstream.Msg, lost <-chan error) error {
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		var msgs []jetstream.Msg
		select {
		case m := <-in:
			msgs = append(make([]jetstream.Msg, 0, x.d.BatchSize), m)
		case err := <-lost:
			return err
		case <-ctx.Done():
			return nil
		}
		size := len(msgs[0].Data())
		linger.Reset(x.d.Linger.Std())
	fill:
		for len(msgs) < x.d.BatchSize && size < x.d.BatchBytes {
			if len(in) == 0 && caughtUp(msgs[len(msgs)-1]) {
				break
			}
			select {
			case m := <-in:
				msgs = append(msgs, m)
				size += len(m.Data())
			case <-linger.C:
				break fill
			case <-ctx.Done():
				for _, m := range msgs {
					_ = m.Nak()
				}
				return nil
			}
		}
		linger.Stop()
		w := x.prepare(stream, msgs)
		if w == nil {
			continue
		}
		select {
		case x.work <- w:
		case <-ctx.Done():
			x.handBack(w)
			return nil
		}
	}
}

// caughtUp says whether the stream held nothing more for the consumer when
// m was delivered, so waiting for a fuller batch would only add latency.
func caughtUp(m jetstream.Msg) bool {
	md, err := m.Metadata()
	return err == nil && md.NumPending == 0
}

// stateCopy says whether m is the AUDIT copy of a STATE event while the
// exporter reads STATE too: the original is delivered from STATE, once.
func (x *Exporter) stateCopy(stream string, m jetstream.Msg) bool {
	if stream != events.AuditStream || !x.readsState {
		return false
	}
	// Only events outside a session (audit.<cluster>._.<type>) can be
	// copies; the header is not parsed for the others.
	_, rest, _ := strings.Cut(m.Subject(), ".")
	_, rest, _ = strings.Cut(rest, ".")
	if !strings.HasPrefix(rest, events.NoSession+".") {
		return false
	}
	return m.Headers().Get(events.HeaderStateSeq) != ""
}

// prepare reads and formats a fetched batch. Filtered events are
// acknowledged at once; events that cannot be read or formatted become
// poison for the dead-letter stream.
func (x *Exporter) prepare(stream string, msgs []jetstream.Msg) *work {
	w := &work{stream: stream, recs: make([]Record, 0, len(msgs)), items: make([]*item, 0, len(msgs)), stop: make(chan struct{})}
	items := make([]item, len(msgs))
	for i, m := range msgs {
		it := &items[i]
		it.msg = m
		// Seq is read from the message's metadata only when needed (a
		// dead letter): parsing it for every event costs more than the
		// rest of this loop.
		r := Record{Stream: stream, Subject: m.Subject(), Event: m.Data()}
		env, err := format.Scan(r.Event)
		r.Envelope = env
		if err != nil {
			w.poison = append(w.poison, poison{r, it, Permanent(fmt.Errorf("unreadable event: %w", err))})
			continue
		}
		if !x.o.Filter.pass(&r.Envelope) || x.stateCopy(stream, m) {
			_ = m.Ack()
			it.settled = true
			x.c.filtered.Add(1)
			if x.o.Metrics != nil {
				x.o.Metrics.filtered.WithLabelValues(x.o.Name).Inc()
			}
			continue
		}
		if x.native {
			r.Data = r.Event
		} else if r.Data, err = x.o.Format.Append(nil, &r.Envelope, r.Event); err != nil {
			w.poison = append(w.poison, poison{r, it, Permanent(fmt.Errorf("format %s: %w", x.o.Format.Name(), err))})
			continue
		}
		w.recs = append(w.recs, r)
		w.items = append(w.items, it)
	}
	if len(w.recs) == 0 && len(w.poison) == 0 {
		return nil
	}
	go x.keepAlive(w)
	return w
}

// keepAlive tells JetStream the batch is being worked on, so a slow or
// retried delivery is not handed to another replica meanwhile.
func (x *Exporter) keepAlive(w *work) {
	t := time.NewTicker(x.d.AckWait.Std() / 3)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			for _, it := range w.items {
				_ = it.msg.InProgress()
			}
			for _, p := range w.poison {
				_ = p.item.msg.InProgress()
			}
		}
	}
}

// handBack returns the unsettled events of a batch to JetStream, so
// another replica (or the next start) gets them without waiting for
// AckWait.
func (x *Exporter) handBack(w *work) {
	w.done()
	for _, it := range w.items {
		if !it.settled {
			_ = it.msg.Nak()
		}
	}
	for _, p := range w.poison {
		if !p.item.settled {
			_ = p.item.msg.Nak()
		}
	}
}
