package exporters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters/format"
)

// Filter narrows what an exporter delivers. Empty lists let everything
// through; an event must pass every non-empty list.
type Filter struct {
	// Types are event types; a '*' token matches one token and a final
	// '>' the rest, as in NATS subjects (db.session.*, db.>).
	Types []string
	// Users are user names (the envelope's user).
	Users []string
	// Databases are database names in Tollgate (db_service); events that
	// concern no database do not pass.
	Databases []string
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	typeRE = regexp.MustCompile(`^([a-z][a-z0-9_]*|\*)(\.([a-z][a-z0-9_]*|\*))*(\.>)?$|^>$`)
)

func (f Filter) validate() error {
	for _, t := range f.Types {
		if !typeRE.MatchString(t) {
			return fmt.Errorf("filter.types: %q is not an event type or pattern (e.g. db.session.query, db.session.*, db.>)", t)
		}
	}
	return nil
}

// matchType matches an event type against a pattern token by token.
func matchType(pattern, typ string) bool {
	for {
		p, prest, pmore := strings.Cut(pattern, ".")
		if p == ">" {
			return typ != ""
		}
		t, trest, tmore := strings.Cut(typ, ".")
		if p != "*" && p != t {
			return false
		}
		if !pmore || !tmore {
			return pmore == tmore
		}
		pattern, typ = prest, trest
	}
}

func (f Filter) pass(e *format.Envelope) bool {
	if len(f.Types) > 0 {
		ok := false
		for _, p := range f.Types {
			if matchType(p, e.Type) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.Users) > 0 && !contains(f.Users, e.User) {
		return false
	}
	if len(f.Databases) > 0 && (e.DBService == "" || !contains(f.Databases, e.DBService)) {
		return false
	}
	return true
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

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
// durable JetStream pull consumer per stream, at least once: an event is
// acknowledged only after the sink confirmed it, or after it was stored in
// the DEADLETTER stream. Several processes running the same exporter share
// its consumers, and so its work.
type Exporter struct {
	o          Options
	d          Delivery
	log        *slog.Logger
	native     bool
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

// consumerConfig is the durable consumer of stream. Types filter AUDIT by
// subject (its subjects carry the type); STATE is filtered here.
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
		// queued, being delivered); room for several replicas.
		MaxAckPending: 20 * x.d.BatchSize,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if x.d.Start == "new" {
		c.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	if stream == events.AuditStream && len(x.o.Filter.Types) > 0 {
		for _, t := range x.o.Filter.Types {
			c.FilterSubjects = append(c.FilterSubjects, "audit.*.*."+t)
		}
	}
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
		if !x.o.Filter.pass(&r.Envelope) {
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

// process delivers one batch and dead-letters its poison.
func (x *Exporter) process(soft, hard context.Context, w *work) {
	defer x.handBack(w)
	if soft.Err() != nil {
		return
	}
	for _, p := range w.poison {
		if err := x.deadLetter(soft, hard, p.rec, p.item, p.err); err != nil {
			return
		}
	}
	if len(w.recs) > 0 {
		_ = x.deliver(soft, hard, w.recs, w.items)
	}
}

// deliver sends recs until the sink confirmed or rejected each of them,
// settling their items as it goes. It returns an error only when the
// exporter is stopping; the unsettled items are then handed back.
func (x *Exporter) deliver(soft, hard context.Context, recs []Record, items []*item) error {
	for attempt := 0; ; {
		start := time.Now()
		err := x.o.Sink.Deliver(hard, recs)
		if err == nil {
			x.acked(recs, items, time.Since(start))
			return nil
		}
		if hard.Err() != nil {
			return hard.Err()
		}
		var re RecordErrors
		switch {
		case errors.As(err, &re):
			var retryRecs []Record
			var retryItems []*item
			var firstRetry error
			for i := range recs {
				e, failed := re[i]
				switch {
				case !failed:
					x.acked(recs[i:i+1], items[i:i+1], 0)
				case IsPermanent(e):
					if derr := x.deadLetter(soft, hard, recs[i], items[i], e); derr != nil {
						return derr
					}
				default:
					if firstRetry == nil {
						firstRetry = e
					}
					retryRecs = append(retryRecs, recs[i])
					retryItems = append(retryItems, items[i])
				}
			}
			if len(retryRecs) == 0 {
				return nil
			}
			// Only the failed records are tried again.
			recs, items, err = retryRecs, retryItems, firstRetry
		case IsPermanent(err):
			if len(recs) == 1 {
				return x.deadLetter(soft, hard, recs[0], items[0], err)
			}
			// The sink refused the batch without saying which event it
			// objects to: halve it until the culprits are alone.
			mid := len(recs) / 2
			if err := x.deliver(soft, hard, recs[:mid], items[:mid]); err != nil {
				return err
			}
			return x.deliver(soft, hard, recs[mid:], items[mid:])
		}
		x.retried(err, len(recs))
		if !sleep(soft, x.backoff(attempt)) {
			return soft.Err()
		}
		attempt++
	}
}

// acked acknowledges delivered events to JetStream.
func (x *Exporter) acked(recs []Record, items []*item, took time.Duration) {
	var n uint64
	for i, it := range items {
		if it.settled {
			continue
		}
		_ = it.msg.Ack()
		it.settled = true
		n += uint64(len(recs[i].Data))
	}
	x.c.delivered.Add(uint64(len(recs)))
	x.c.bytes.Add(n)
	x.c.setDelivered()
	if x.o.Metrics != nil {
		x.o.Metrics.delivered.WithLabelValues(x.o.Name).Add(float64(len(recs)))
		x.o.Metrics.bytes.WithLabelValues(x.o.Name).Add(float64(n))
		if took > 0 {
			x.o.Metrics.batch.WithLabelValues(x.o.Name).Observe(took.Seconds())
		}
	}
}

func (x *Exporter) retried(err error, n int) {
	retries := x.c.retries.Add(1)
	x.c.setError(err)
	if x.o.Metrics != nil {
		x.o.Metrics.retries.WithLabelValues(x.o.Name).Inc()
	}
	// The first failure and then one in 20 are logged: a sink down for an
	// hour must not flood the log.
	if retries == 1 || retries%20 == 0 {
		x.log.Warn("delivery failed; retrying", "events", n, "retries", retries, "err", err)
	}
}

// backoff is the wait before attempt (0-based): exponential from
// BackoffMin to BackoffMax, with jitter so replicas do not retry in step.
func (x *Exporter) backoff(attempt int) time.Duration {
	d := x.d.BackoffMin.Std()
	for i := 0; i < attempt && d < x.d.BackoffMax.Std(); i++ {
		d *= 2
	}
	if d > x.d.BackoffMax.Std() {
		d = x.d.BackoffMax.Std()
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
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
