package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrAuditUnavailable says an event was not stored. In strict mode the
// action it records must not happen; the error wraps the cause.
var ErrAuditUnavailable = errors.New("audit store unavailable")

// ErrPublisherClosed is returned by a Publisher after Close.
var ErrPublisherClosed = errors.New("events: publisher closed")

// Mode says when Publish returns.
type Mode int

const (
	// ModeStrict returns only after JetStream acknowledged the event.
	ModeStrict Mode = iota
	// ModeAsync returns once the event is queued; a background goroutine
	// stores it, retrying until it is stored. A full queue blocks.
	ModeAsync
)

func (m Mode) String() string {
	switch m {
	case ModeStrict:
		return "strict"
	case ModeAsync:
		return "async"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode reads "strict" or "async", as written in the configuration.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "strict", "":
		return ModeStrict, nil
	case "async":
		return ModeAsync, nil
	}
	return 0, fmt.Errorf("events: audit mode %q is not strict or async", s)
}

// Defaults of the publisher options.
const (
	DefaultAckTimeout     = 2 * time.Second
	DefaultQueueSize      = 65536
	DefaultMaxMessageSize = 1 << 20
	// minMessageSize leaves room for the envelope of any event after its
	// large fields are cut.
	minMessageSize = 1024
	// maxInFlight bounds the publishes awaiting an acknowledgement on the
	// publisher's own JetStream context.
	maxInFlight = 1 << 16
	// recycleLimit keeps buffers that grew for a very large event out of
	// the pool.
	recycleLimit = 64 << 10
	// msgIDHeaderLen is the header NATS sends for Nats-Msg-Id without the
	// id itself: "NATS/1.0\r\n" "Nats-Msg-Id: " id "\r\n" "\r\n".
	msgIDHeaderLen = len("NATS/1.0\r\n") + len(jetstream.MsgIDHeader+": ") + len("\r\n\r\n")
)

// PublisherOption configures a Publisher.
type PublisherOption func(*Publisher) error

// WithMode sets strict (default) or async publishing.
func WithMode(m Mode) PublisherOption {
	return func(p *Publisher) error {
		if m != ModeStrict && m != ModeAsync {
			return fmt.Errorf("mode %d is not ModeStrict or ModeAsync", int(m))
		}
		p.mode = m
		return nil
	}
}

// WithAckTimeout bounds how long a publish waits for JetStream's
// acknowledgement (DefaultAckTimeout).
func WithAckTimeout(d time.Duration) PublisherOption {
	return func(p *Publisher) error {
		if d <= 0 {
			return fmt.Errorf("ack timeout %s: must be positive", d)
		}
		p.ackTimeout = d
		return nil
	}
}

// WithQueueSize bounds the async queue (DefaultQueueSize events).
func WithQueueSize(n int) PublisherOption {
	return func(p *Publisher) error {
		if n < 1 {
			return fmt.Errorf("queue size %d: must be at least 1", n)
		}
		p.queueSize = n
		return nil
	}
}

// WithMaxMessageSize sets the largest message (headers and event) the
// publisher sends; larger events have their large fields cut. Without it,
// the smaller of the server's max payload and the AUDIT stream's max
// message size is used, else DefaultMaxMessageSize.
func WithMaxMessageSize(n int) PublisherOption {
	return func(p *Publisher) error {
		if n < minMessageSize {
			return fmt.Errorf("max message size %d: must be at least %d bytes", n, minMessageSize)
		}
		p.maxMsg = n
		return nil
	}
}

// WithLogger sets where the publisher reports retries and losses.
func WithLogger(l *slog.Logger) PublisherOption {
	return func(p *Publisher) error {
		if l == nil {
			return errors.New("logger is nil")
		}
		p.log = l
		return nil
	}
}

// Stats counts what a Publisher did.
type Stats struct {
	// Published counts messages sent to JetStream, retries included.
	Published uint64
	// Acked counts events JetStream acknowledged as stored.
	Acked uint64
	// Duplicates counts acknowledgements of an id already stored.
	Duplicates uint64
	// Retried counts events sent again after a failure (async mode).
	Retried uint64
	// Truncated counts events whose large fields were cut.
	Truncated uint64
	// Blocked is the total time Publish waited for room in a full queue.
	Blocked time.Duration
	// QueueLen is the number of events queued and not yet sent.
	QueueLen int
	// Pending is the number of events accepted and not yet stored.
	Pending int64
}

// Publisher stores events in the AUDIT stream. It is safe for concurrent
// use. In strict mode Publish returns after JetStream acknowledged the
// event; in async mode it queues the event and a goroutine stores it,
// retrying with the same id until it is stored.
type Publisher struct {
	js         jetstream.JetStream
	ajs        jetstream.JetStream // own context whose ack callbacks complete batches and async events
	cluster    string
	mode       Mode
	ackTimeout time.Duration
	queueSize  int
	maxMsg     int
	log        *slog.Logger

	pool sync.Pool // *outMsg

	trackMu sync.Mutex
	track   map[*nats.Msg]*outMsg

	queue     chan *outMsg
	retryMu   sync.Mutex
	retries   []*outMsg
	retryWake chan struct{}
	progress  atomic.Bool
	closing   chan struct{}
	stop      chan struct{}
	drained   chan struct{}
	closeOnce sync.Once
	closeErr  error

	idleMu sync.Mutex
	idle   chan struct{}

	published, acked, duplicates, retried, truncated atomic.Uint64
	blocked, pending                                 atomic.Int64

	largeMu sync.Mutex
	large   jetstream.ObjectStore

	lastWarn atomic.Int64
}

// outMsg is one encoded event on its way to JetStream; pooled so the hot
// path reuses its buffer, header and message.
type outMsg struct {
	msg   nats.Msg
	hdrID []string
	id    string
	batch *batchWait
}

// batchWait completes when every message of a strict batch is resolved.
type batchWait struct {
	left atomic.Int32
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func (w *batchWait) resolve(err error) {
	if err != nil {
		w.mu.Lock()
		if w.err == nil {
			w.err = err
		}
		w.mu.Unlock()
	}
	if w.left.Add(-1) == 0 {
		close(w.done)
	}
}

// NewPublisher returns a publisher of events stamped with cluster. The
// AUDIT stream should exist (EnsureStreams) before the first Publish.
func NewPublisher(js jetstream.JetStream, cluster string, opts ...PublisherOption) (*Publisher, error) {
	if js == nil {
		return nil, errors.New("events: new publisher: JetStream is nil")
	}
	if err := ValidToken(cluster); err != nil {
		return nil, fmt.Errorf("events: new publisher: cluster name: %w", err)
	}
	p := &Publisher{
		js:         js,
		cluster:    cluster,
		mode:       ModeStrict,
		ackTimeout: DefaultAckTimeout,
		queueSize:  DefaultQueueSize,
		log:        slog.Default(),
		track:      map[*nats.Msg]*outMsg{},
		retryWake:  make(chan struct{}, 1),
		closing:    make(chan struct{}),
		stop:       make(chan struct{}),
		drained:    make(chan struct{}),
	}
	for _, o := range opts {
		if err := o(p); err != nil {
			return nil, fmt.Errorf("events: new publisher: %w", err)
		}
	}
	if p.maxMsg == 0 {
		p.maxMsg = p.discoverMaxMessage()
	}
	ajs, err := jetstream.New(js.Conn(),
		jetstream.WithPublishAsyncAckHandler(p.onAck),
		jetstream.WithPublishAsyncErrHandler(p.onErr),
		jetstream.WithPublishAsyncTimeout(p.ackTimeout),
		jetstream.WithPublishAsyncMaxPending(maxInFlight),
	)
	if err != nil {
		return nil, fmt.Errorf("events: new publisher: %w", err)
	}
	p.ajs = ajs
	p.pool.New = func() any {
		m := &outMsg{hdrID: make([]string, 1)}
		m.msg.Header = nats.Header{jetstream.MsgIDHeader: m.hdrID}
		return m
	}
	if p.mode == ModeAsync {
		p.queue = make(chan *outMsg, p.queueSize)
		go p.drain()
	} else {
		close(p.drained)
	}
	return p, nil
}

// discoverMaxMessage is the smaller of the server's max payload and the
// AUDIT stream's max message size.
func (p *Publisher) discoverMaxMessage() int {
	limit := DefaultMaxMessageSize
	if mp := p.js.Conn().MaxPayload(); mp > 0 {
		limit = int(mp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.ackTimeout)
	defer cancel()
	if s, err := p.js.Stream(ctx, AuditStream); err == nil {
		if mm := int(s.CachedInfo().Config.MaxMsgSize); mm > 0 && mm < limit {
			limit = mm
		}
	}
	return max(limit, minMessageSize)
}

// Mode reports how the publisher publishes.
func (p *Publisher) Mode() Mode { return p.mode }

// MaxMessageSize is the largest message the publisher sends.
func (p *Publisher) MaxMessageSize() int { return p.maxMsg }

// Stats returns the publisher's counters.
func (p *Publisher) Stats() Stats {
	s := Stats{
		Published:  p.published.Load(),
		Acked:      p.acked.Load(),
		Duplicates: p.duplicates.Load(),
		Retried:    p.retried.Load(),
		Truncated:  p.truncated.Load(),
		Blocked:    time.Duration(p.blocked.Load()),
		Pending:    p.pending.Load(),
	}
	if p.queue != nil {
		s.QueueLen = len(p.queue)
	}
	return s
}

// Publish stamps ev (id, type, code, time, cluster where empty) and stores
// it. In strict mode it returns once JetStream acknowledged it, or an error
// wrapping ErrAuditUnavailable within the ack timeout. Publishing the same
// event again (same id) after a failure stores it once.
func (p *Publisher) Publish(ctx context.Context, ev Event) error {
	if p.isClosing() {
		return ErrPublisherClosed
	}
	m, err := p.encode(ctx, ev)
	if err != nil {
		return err
	}
	if p.mode == ModeAsync {
		return p.enqueue(ctx, m)
	}
	return p.publishStrict(ctx, m)
}

// PublishBatch stores evs together: in strict mode it sends them all and
// waits for every acknowledgement at once, returning an error wrapping
// ErrAuditUnavailable if any of them was not stored; the batch may then be
// published again as a whole, and events already stored are deduplicated.
func (p *Publisher) PublishBatch(ctx context.Context, evs []Event) error {
	if p.isClosing() {
		return ErrPublisherClosed
	}
	if len(evs) == 0 {
		return nil
	}
	if p.mode == ModeAsync {
		for _, ev := range evs {
			m, err := p.encode(ctx, ev)
			if err != nil {
				return err
			}
			if err := p.enqueue(ctx, m); err != nil {
				return err
			}
		}
		return nil
	}
	if len(evs) == 1 {
		m, err := p.encode(ctx, evs[0])
		if err != nil {
			return err
		}
		return p.publishStrict(ctx, m)
	}
	w := &batchWait{done: make(chan struct{})}
	w.left.Store(int32(len(evs)))
	for i, ev := range evs {
		m, err := p.encode(ctx, ev)
		if err != nil {
			// Events already sent are still awaited below so the caller
			// learns their fate in one error; the rest are not sent.
			for range len(evs) - i {
				w.resolve(err)
			}
			break
		}
		m.batch = w
		if err := p.send(m); err != nil {
			m.batch = nil
			p.recycle(m)
			w.resolve(err)
		}
	}
	timer := time.NewTimer(p.ackTimeout)
	defer timer.Stop()
	select {
	case <-w.done:
		w.mu.Lock()
		err := w.err
		w.mu.Unlock()
		if err != nil {
			return p.unavailable(ctx, err)
		}
		return nil
	case <-timer.C:
		return p.unavailable(ctx, context.DeadlineExceeded)
	case <-ctx.Done():
		return p.unavailable(ctx, ctx.Err())
	}
}

// Flush waits until every accepted event is stored (async mode); in strict
// mode there is nothing to wait for. With producers still publishing it
// returns once the publisher is idle at some instant.
func (p *Publisher) Flush(ctx context.Context) error {
	for {
		p.idleMu.Lock()
		if p.pending.Load() == 0 {
			p.idleMu.Unlock()
			return nil
		}
		if p.idle == nil {
			p.idle = make(chan struct{})
		}
		ch := p.idle
		p.idleMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("events: flush: %d events not yet stored: %w", p.pending.Load(), ctx.Err())
		}
	}
}

// Close stops accepting events, waits until every accepted event is stored
// or ctx ends, and releases the publisher. Events still unstored when ctx
// ends are reported in the error, never dropped silently.
func (p *Publisher) Close(ctx context.Context) error {
	p.closeOnce.Do(func() {
		close(p.closing)
		err := p.Flush(ctx)
		close(p.stop)
		<-p.drained
		if err != nil {
			n := p.pending.Load()
			p.log.Error("audit publisher closed with events not stored", "events", n, "error", err)
			p.closeErr = fmt.Errorf("%w: publisher closed with %d events not stored: %v", ErrAuditUnavailable, n, err)
		}
		p.ajs.CleanupPublisher()
	})
	return p.closeErr
}

func (p *Publisher) isClosing() bool {
	select {
	case <-p.closing:
		return true
	default:
		return false
	}
}

// encode stamps ev and encodes it into a pooled message, cutting large
// fields (kept in the object store) when it would not fit.
func (p *Publisher) encode(ctx context.Context, ev Event) (*outMsg, error) {
	if err := Stamp(ev, p.cluster); err != nil {
		return nil, err
	}
	h := ev.Header()
	m := p.pool.Get().(*outMsg)
	data, err := appendJSON(m.msg.Data[:0], ev)
	if err != nil {
		p.pool.Put(m)
		return nil, fmt.Errorf("events: encode %s %s: %w", h.Type, h.ID, err)
	}
	m.id = h.ID
	m.hdrID[0] = h.ID
	m.msg.Subject = AuditSubject(ev)
	m.msg.Data = data
	if limit := p.maxMsg - msgIDHeaderLen - len(h.ID) - len(m.msg.Subject); len(data) > limit {
		// The subject is counted too: it is small, and leaving it out
		// could put a message a few bytes over the server's limit.
		if err := p.cutLarge(ctx, m, limit); err != nil {
			p.recycle(m)
			return nil, err
		}
	}
	return m, nil
}

func (p *Publisher) cutLarge(ctx context.Context, m *outMsg, limit int) error {
	event, full, err := truncateEvent(m.msg.Data, limit)
	if err != nil {
		return fmt.Errorf("events: event %s: %w", m.id, err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.ackTimeout)
	defer cancel()
	obs, err := p.largeStore(ctx)
	if err == nil {
		_, err = obs.PutBytes(ctx, m.id, full)
	}
	if err != nil {
		return fmt.Errorf("%w: storing large fields of event %s in %s: %v", ErrAuditUnavailable, m.id, LargeFieldsBucket, err)
	}
	m.msg.Data = event
	p.truncated.Add(1)
	return nil
}

func (p *Publisher) largeStore(ctx context.Context) (jetstream.ObjectStore, error) {
	p.largeMu.Lock()
	defer p.largeMu.Unlock()
	if p.large != nil {
		return p.large, nil
	}
	obs, err := p.js.ObjectStore(ctx, LargeFieldsBucket)
	if err != nil {
		return nil, err
	}
	p.large = obs
	return obs, nil
}

// publishStrict sends one message and waits for its acknowledgement.
func (p *Publisher) publishStrict(ctx context.Context, m *outMsg) error {
	actx, cancel := context.WithTimeout(ctx, p.ackTimeout)
	p.published.Add(1)
	ack, err := p.js.PublishMsg(actx, &m.msg)
	cancel()
	// A synchronous publish keeps no reference to the message once it
	// returned, so it can be reused whatever the outcome.
	p.recycle(m)
	if err != nil {
		return p.unavailable(ctx, err)
	}
	p.acked.Add(1)
	if ack.Duplicate {
		p.duplicates.Add(1)
	}
	return nil
}

// unavailable turns the cause of a failed publish into the error callers
// see: ErrAuditUnavailable with the cause, or the caller's own context
// error when the caller gave up first.
func (p *Publisher) unavailable(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("events: publish abandoned: %w", ctx.Err())
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%w: no acknowledgement from JetStream within %s", ErrAuditUnavailable, p.ackTimeout)
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: no stream answered for %s (does the %s stream exist?)", ErrAuditUnavailable, AuditSubjects, AuditStream)
	}
	return fmt.Errorf("%w: %v", ErrAuditUnavailable, err)
}

// send publishes m on the publisher's own context; its fate arrives in
// onAck or onErr unless send returns an error.
func (p *Publisher) send(m *outMsg) error {
	p.trackMu.Lock()
	p.track[&m.msg] = m
	p.trackMu.Unlock()
	p.published.Add(1)
	if _, err := p.ajs.PublishMsgAsync(&m.msg); err != nil {
		p.trackMu.Lock()
		delete(p.track, &m.msg)
		p.trackMu.Unlock()
		return err
	}
	return nil
}

func (p *Publisher) untrack(msg *nats.Msg) *outMsg {
	p.trackMu.Lock()
	m := p.track[msg]
	delete(p.track, msg)
	p.trackMu.Unlock()
	return m
}

func (p *Publisher) onAck(_ jetstream.JetStream, msg *nats.Msg, ack *jetstream.PubAck) {
	m := p.untrack(msg)
	if m == nil {
		return
	}
	p.acked.Add(1)
	if ack.Duplicate {
		p.duplicates.Add(1)
	}
	if w := m.batch; w != nil {
		m.batch = nil
		p.recycle(m)
		w.resolve(nil)
		return
	}
	p.progress.Store(true)
	p.recycle(m)
	p.done()
}

func (p *Publisher) onErr(_ jetstream.JetStream, msg *nats.Msg, err error) {
	m := p.untrack(msg)
	if m == nil {
		return
	}
	if w := m.batch; w != nil {
		m.batch = nil
		p.recycle(m)
		w.resolve(err)
		return
	}
	p.warn("audit event not stored, retrying", "id", m.id, "error", err)
	p.addRetry(m)
}

// done marks one accepted async event as stored.
func (p *Publisher) done() {
	if p.pending.Add(-1) != 0 {
		return
	}
	p.idleMu.Lock()
	if p.pending.Load() == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.idleMu.Unlock()
}

func (p *Publisher) recycle(m *outMsg) {
	if cap(m.msg.Data) > recycleLimit {
		m.msg.Data = nil
	}
	m.msg.Data = m.msg.Data[:0]
	m.id, m.hdrID[0], m.batch = "", "", nil
	p.pool.Put(m)
}

// warn logs at most once a second, so a store that is down for a while
// does not flood the log with one line per event.
func (p *Publisher) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := p.lastWarn.Load()
	if now-last < int64(time.Second) || !p.lastWarn.CompareAndSwap(last, now) {
		return
	}
	p.log.Warn(msg, args...)
}

// enqueue hands an encoded event to the async goroutine, blocking while the
// queue is full: events are never dropped.
func (p *Publisher) enqueue(ctx context.Context, m *outMsg) error {
	// Counting the event before looking at closing pairs with Close, which
	// closes closing before it waits for pending to reach zero: either Close
	// waits for this event or this event sees closing.
	p.pending.Add(1)
	if p.isClosing() {
		p.recycle(m)
		p.done()
		return ErrPublisherClosed
	}
	select {
	case p.queue <- m:
		return nil
	default:
	}
	start := time.Now()
	defer func() { p.blocked.Add(int64(time.Since(start))) }()
	select {
	case p.queue <- m:
		return nil
	case <-ctx.Done():
		p.recycle(m)
		p.done()
		return fmt.Errorf("events: audit queue full (%d events) until the context ended: %w", p.queueSize, ctx.Err())
	case <-p.closing:
		p.recycle(m)
		p.done()
		return ErrPublisherClosed
	}
}

func (p *Publisher) addRetry(m *outMsg) {
	p.retryMu.Lock()
	p.retries = append(p.retries, m)
	p.retryMu.Unlock()
	select {
	case p.retryWake <- struct{}{}:
	default:
	}
}

func (p *Publisher) takeRetries(buf []*outMsg) []*outMsg {
	p.retryMu.Lock()
	buf = append(buf[:0], p.retries...)
	clear(p.retries)
	p.retries = p.retries[:0]
	p.retryMu.Unlock()
	return buf
}

// Retry backoff of the async goroutine.
const (
	retryMin = 5 * time.Millisecond
	retryMax = time.Second
)

// drain is the async goroutine: it sends queued events pipelined and
// resends failed ones with backoff. While any event waits for a resend it
// takes nothing new from the queue, so a store that is down fills the queue
// and blocks producers instead of growing memory.
func (p *Publisher) drain() {
	defer close(p.drained)
	var (
		backoff time.Duration
		retries []*outMsg
	)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		retries = p.takeRetries(retries)
		if len(retries) > 0 {
			if p.progress.Swap(false) {
				backoff = 0
			}
			backoff = min(max(backoff*2, retryMin), retryMax)
			timer.Reset(backoff)
			select {
			case <-timer.C:
			case <-p.stop:
				p.abandon(retries)
				return
			}
			for i, m := range retries {
				p.retried.Add(1)
				if err := p.send(m); err != nil {
					p.warn("audit event not sent, retrying", "id", m.id, "error", err)
					for _, r := range retries[i:] {
						p.addRetry(r)
					}
					break
				}
			}
			clear(retries)
			continue
		}
		select {
		case m := <-p.queue:
			if err := p.send(m); err != nil {
				p.warn("audit event not sent, retrying", "id", m.id, "error", err)
				p.addRetry(m)
			}
		case <-p.retryWake:
		case <-p.stop:
			p.abandon(p.takeRetries(retries))
			return
		}
	}
}

// abandon logs the ids of events that Close gave up on, queued or waiting
// for a resend, so they can be found in the log when nowhere else.
func (p *Publisher) abandon(ms []*outMsg) {
	for {
		select {
		case m := <-p.queue:
			ms = append(ms, m)
			continue
		default:
		}
		break
	}
	for _, m := range ms {
		p.log.Error("audit event not stored before close", "id", m.id, "subject", m.msg.Subject)
	}
}

// appendJSON encodes ev after dst with a pooled encoder. HTML escaping is
// off: statements are full of < > & and SIEMs show the JSON as is.
func appendJSON(dst []byte, ev Event) ([]byte, error) {
	e := encPool.Get().(*jsonEncoder)
	e.w.b = dst
	err := e.enc.Encode(ev)
	out := e.w.b
	e.w.b = nil
	encPool.Put(e)
	if err != nil {
		return dst, err
	}
	// Encode ends the value with a newline that the message does not need.
	return out[:len(out)-1], nil
}

type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

type jsonEncoder struct {
	w   sliceWriter
	enc *json.Encoder
}

var encPool = sync.Pool{New: func() any {
	e := &jsonEncoder{}
	e.enc = json.NewEncoder(&e.w)
	e.enc.SetEscapeHTML(false)
	return e
}}
