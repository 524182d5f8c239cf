package exporters

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters/format"
)

// work is one batch of events on its way to the sink.
type work struct {
	stream string
	recs   []Record
	items  []*item // items[i] is the event of recs[i]
	poison []poison
	// msgs are the messages the batch's events come from, each once, for
	// the keep-alive.
	msgs []*fetched
	stop chan struct{} // ends the keep-alive
	once sync.Once
}

// fetched is one fetched message. A frame's events share it, and may be
// cut into several batches: the message is acknowledged when the last of
// its events is settled, and handed back at most once.
type fetched struct {
	msg  jetstream.Msg
	open atomic.Int32 // events not settled yet
	over atomic.Bool  // acknowledged or handed back
}

// item is one event of a fetched message and whether it is settled:
// delivered, dead-lettered or filtered out. Sub-batches share items, so
// what a retry settles is settled for the whole batch; only the goroutine
// that delivers the batch touches settled.
type item struct {
	m *fetched
	// idx is the event's place in its frame; inFrame is false for a
	// message holding one event without a frame.
	idx     int
	inFrame bool
	settled bool
}

// settle marks the event done and acknowledges its message when it was
// the message's last open event.
func (it *item) settle() {
	if it.settled {
		return
	}
	it.settled = true
	if it.m.open.Add(-1) == 0 && it.m.over.CompareAndSwap(false, true) {
		_ = it.m.msg.Ack()
	}
}

// handBack returns the message to JetStream unless it is already settled
// or handed back. Events of a frame that were delivered meanwhile are
// delivered again with it: at least once.
func (f *fetched) handBack() {
	if f.over.CompareAndSwap(false, true) {
		_ = f.msg.Nak()
	}
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
// when it is full (BatchSize events, BatchBytes), when Linger passed since
// its first message, or at once when the stream has nothing more for now.
// A frame is never split across fetches: a batch may end with more than
// BatchSize events, and prepare cuts it. It returns when ctx ends (nil)
// or the consumer is lost.
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
		n := eventCount(msgs[0].Data())
		linger.Reset(x.d.Linger.Std())
	fill:
		for n < x.d.BatchSize && size < x.d.BatchBytes {
			if len(in) == 0 && caughtUp(msgs[len(msgs)-1]) {
				break
			}
			select {
			case m := <-in:
				msgs = append(msgs, m)
				size += len(m.Data())
				n += eventCount(m.Data())
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
		ws := x.prepare(stream, msgs, n)
		for i, w := range ws {
			select {
			case x.work <- w:
			case <-ctx.Done():
				for _, w := range ws[i:] {
					x.handBack(w)
				}
				return nil
			}
		}
	}
}

var (
	newline       = []byte{'\n'}
	trailerPrefix = []byte(`{"sig":`)
)

// eventCount is how many events a message holds, from its lines (a frame
// is a header line, one line per event and maybe a trailer): cheap enough
// for every message, and exact for frames as events.EncodeFrame writes
// them.
func eventCount(data []byte) int {
	if !events.IsFrame(data) {
		return 1
	}
	n := bytes.Count(data, newline) - 1
	if last := bytes.LastIndexByte(data, '\n'); last < len(data)-1 && !bytes.HasPrefix(data[last+1:], trailerPrefix) {
		n++ // a last event without its newline
	}
	return max(n, 0)
}

// caughtUp says whether the stream held nothing more for the consumer when
// m was delivered, so waiting for a fuller batch would only add latency.
func caughtUp(m jetstream.Msg) bool {
	md, err := m.Metadata()
	return err == nil && md.NumPending == 0
}

// stateCopy says whether m is the AUDIT copy of a STATE event while the
// exporter reads STATE too: the original is delivered from STATE, once.
// broker/trail stores each copy as a frame of one event, or (before
// frames) as the event alone, with the STATE sequence in a header.
func (x *Exporter) stateCopy(stream string, m jetstream.Msg) bool {
	if stream != events.AuditStream || !x.readsState {
		return false
	}
	return m.Headers().Get(events.HeaderStateSeq) != ""
}

// prepare splits a fetched batch into its events, reads and formats them,
// and cuts them into batches of at most BatchSize events (n is about how
// many there are). Filtered events are settled at once; events that cannot
// be read or formatted become poison for the dead-letter stream.
func (x *Exporter) prepare(stream string, msgs []jetstream.Msg, n int) []*work {
	fs := make([]fetched, len(msgs))
	items := make([]item, 0, n)
	recs := make([]Record, 0, n)
	its := make([]*item, 0, n)
	var poisons []poison
	var evs [][]byte
	// newItem takes the next item from items, allocating only when the
	// estimate n was short: items must not move once pointed to.
	newItem := func(it item) *item {
		if len(items) == cap(items) {
			items = make([]item, 0, max(16, n/4))
		}
		items = append(items, it)
		return &items[len(items)-1]
	}
	for i, m := range msgs {
		f := &fs[i]
		f.msg = m
		data := m.Data()
		evs = evs[:0]
		inFrame := events.IsFrame(data)
		if inFrame {
			err := events.SplitEvents(data, func(ev []byte) error { evs = append(evs, ev); return nil })
			if err != nil {
				// Not even split: the message is dead-lettered whole.
				f.open.Store(1)
				it := newItem(item{m: f})
				r := Record{Stream: stream, Subject: m.Subject(), Event: data}
				poisons = append(poisons, poison{r, it, Permanent(fmt.Errorf("unreadable frame: %w", err))})
				continue
			}
			if len(evs) == 0 {
				f.over.Store(true)
				_ = m.Ack()
				continue
			}
		} else {
			evs = append(evs, data)
		}
		f.open.Store(int32(len(evs)))
		for idx, ev := range evs {
			it := newItem(item{m: f, idx: idx, inFrame: inFrame})
			// Seq is read from the message's metadata only when needed (a
			// dead letter): parsing it for every event costs more than the
			// rest of this loop.
			r := Record{Stream: stream, Subject: m.Subject(), Event: ev}
			env, err := format.Scan(r.Event)
			r.Envelope = env
			if err != nil {
				poisons = append(poisons, poison{r, it, Permanent(fmt.Errorf("unreadable event: %w", err))})
				continue
			}
			if inFrame {
				// The subject the event would have had as a message of
				// its own: sinks and filters keyed on it keep working.
				r.Subject = events.EventSubject(env.Cluster, env.SID, env.Type)
			}
			if !x.o.Filter.pass(&r.Envelope) || x.stateCopy(stream, m) {
				it.settle()
				x.c.filtered.Add(1)
				if x.o.Metrics != nil {
					x.o.Metrics.filtered.WithLabelValues(x.o.Name).Inc()
				}
				continue
			}
			if x.native {
				r.Data = r.Event
			} else if r.Data, err = x.o.Format.Append(nil, &r.Envelope, r.Event); err != nil {
				poisons = append(poisons, poison{r, it, Permanent(fmt.Errorf("format %s: %w", x.o.Format.Name(), err))})
				continue
			}
			recs = append(recs, r)
			its = append(its, it)
		}
	}
	if len(recs) == 0 && len(poisons) == 0 {
		return nil
	}
	ws := make([]*work, 0, 1+len(recs)/x.d.BatchSize)
	for len(recs) > 0 || len(poisons) > 0 {
		k := min(len(recs), x.d.BatchSize)
		w := &work{stream: stream, recs: recs[:k:k], items: its[:k:k], poison: poisons, stop: make(chan struct{})}
		recs, its, poisons = recs[k:], its[k:], nil
		for _, it := range w.items {
			w.addMsg(it.m)
		}
		for _, p := range w.poison {
			w.addMsg(p.item.m)
		}
		go x.keepAlive(w)
		ws = append(ws, w)
	}
	return ws
}

// addMsg adds f to the batch's messages; a message's events are next to
// each other, so comparing with the last one is enough.
func (w *work) addMsg(f *fetched) {
	if len(w.msgs) == 0 || w.msgs[len(w.msgs)-1] != f {
		w.msgs = append(w.msgs, f)
	}
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
			for _, f := range w.msgs {
				if !f.over.Load() {
					_ = f.msg.InProgress()
				}
			}
		}
	}
}

// handBack returns the messages of the batch's unsettled events to
// JetStream, so another replica (or the next start) gets them without
// waiting for AckWait.
func (x *Exporter) handBack(w *work) {
	w.done()
	for _, it := range w.items {
		if !it.settled {
			it.m.handBack()
		}
	}
	for _, p := range w.poison {
		if !p.item.settled {
			p.item.m.handBack()
		}
	}
}
