package events

import (
	"context"
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

// Defaults of the publisher options.
const (
	DefaultAckTimeout     = 2 * time.Second
	DefaultQueueSize      = 65536
	DefaultMaxMessageSize = 1 << 20
	// minMessageSize leaves room for the envelope of any event after its
	// large fields are cut.
	minMessageSize = 1024
	// maxInFlight bounds the async events awaiting an acknowledgement:
	// enough to keep the server busy (a few milliseconds of its work), few
	// enough that the window drains well within the ack timeout even on a
	// machine starved of CPU, where a larger window made acks time out.
	maxInFlight = 2048
	// recycleLimit keeps buffers that grew for a very large event out of
	// the pool.
	recycleLimit = 64 << 10
	// msgIDHeaderLen is the header NATS sends for Nats-Msg-Id without the
	// id itself: "NATS/1.0\r\n" "Nats-Msg-Id: " id "\r\n" "\r\n".
	msgIDHeaderLen = len("NATS/1.0\r\n") + len(jetstream.MsgIDHeader+": ") + len("\r\n\r\n")
)

// Publisher stores events in the AUDIT stream. It is safe for concurrent
// use. In strict mode Publish returns after JetStream acknowledged the
// event; in async mode it queues the event and a goroutine stores it,
// retrying with the same id until it is stored.
type Publisher struct {
	js         jetstream.JetStream
	pipe       *ackPipe
	cluster    string
	mode       Mode
	ackTimeout time.Duration
	queueSize  int
	maxMsg     int
	log        *slog.Logger

	msgs    sync.Pool // *outMsg
	waiters sync.Pool // *waiter

	queue     chan *outMsg
	slots     chan struct{} // bounds async events in flight
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

	// fault is set while the AUDIT stream is missing or weakened
	// (SetStreamFault); faultWake tells the async goroutine of a change.
	fault     atomic.Pointer[streamFault]
	faultWake chan struct{}
}

// streamFault is the error strict publishes return while it is set.
type streamFault struct{ err error }

// outMsg is one encoded event on its way to JetStream; pooled so the hot
// path reuses its buffer, header and message.
type outMsg struct {
	msg   nats.Msg
	hdrID []string
	id    string
	// w is the strict caller waiting for this message; nil in async mode.
	w *waiter
	// sending is the pipe sequence number + 1 while the pipe sends it.
	sending atomic.Uint64
	// tries counts resends for a strict caller.
	tries int
}

// waiter completes when every message of one strict Publish or
// PublishBatch is resolved. It is pooled, unless its caller gave up before
// it completed: late resolutions may still touch it then.
type waiter struct {
	left     atomic.Int32
	done     chan struct{}
	deadline time.Duration // on the pipe's clock
	timer    *time.Timer
	mu       sync.Mutex
	err      error
	// cause is the last error a message was resent after, reported when
	// the deadline passes before the resend succeeded.
	cause error
}

func (w *waiter) setCause(err error) {
	w.mu.Lock()
	w.cause = err
	w.mu.Unlock()
}

func (w *waiter) lastCause() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if w.cause != nil {
		return w.cause
	}
	return errNoAck
}

func (w *waiter) resolve(err error) {
	if err != nil {
		w.mu.Lock()
		if w.err == nil {
			w.err = err
		}
		w.mu.Unlock()
	}
	if w.left.Add(-1) == 0 {
		w.done <- struct{}{}
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
		retryWake:  make(chan struct{}, 1),
		faultWake:  make(chan struct{}, 1),
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
	pipe, err := newAckPipe(js.Conn(), p.ackTimeout, p.onResolved)
	if err != nil {
		return nil, fmt.Errorf("events: new publisher: %w", err)
	}
	p.pipe = pipe
	p.msgs.New = func() any {
		m := &outMsg{hdrID: make([]string, 1)}
		m.msg.Header = nats.Header{jetstream.MsgIDHeader: m.hdrID}
		return m
	}
	p.waiters.New = func() any {
		w := &waiter{done: make(chan struct{}, 1), timer: time.NewTimer(time.Hour)}
		w.timer.Stop()
		return w
	}
	if p.mode == ModeAsync {
		p.queue = make(chan *outMsg, p.queueSize)
		p.slots = make(chan struct{}, maxInFlight)
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

// Publish stamps ev (id, type, code, time, cluster where empty) and stores
// it. In strict mode it returns once JetStream acknowledged it, or an error
// wrapping ErrAuditUnavailable within the ack timeout. Publishing the same
// event again (same id) after a failure stores it once.
func (p *Publisher) Publish(ctx context.Context, ev Event) error {
	if p.isClosing() {
		return ErrPublisherClosed
	}
	if p.mode == ModeStrict {
		if f := p.fault.Load(); f != nil {
			return f.err
		}
		return p.publishStrict(ctx, ev)
	}
	m, err := p.encode(ctx, ev)
	if err != nil {
		return err
	}
	return p.enqueue(ctx, m)
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
	if f := p.fault.Load(); f != nil {
		return f.err
	}
	return p.publishStrict(ctx, evs...)
}

// SetStreamFault suspends the publisher while the AUDIT stream is missing
// or weakened (fault, e.g. a *StreamFault from a Guard) and resumes it when
// fault is nil. While suspended, a strict Publish or PublishBatch returns at
// once an error wrapping ErrAuditUnavailable and fault, so the action is
// refused rather than recorded where it could be lost or erased. An async
// publisher keeps accepting events but holds them, unsent, until resumed:
// its queue then fills and blocks producers, so nothing is dropped and
// nothing goes to the weakened stream. Events already sent are not recalled.
func (p *Publisher) SetStreamFault(fault error) {
	if fault == nil {
		p.fault.Store(nil)
	} else {
		p.fault.Store(&streamFault{err: fmt.Errorf("%w: %w", ErrAuditUnavailable, fault)})
	}
	select {
	case p.faultWake <- struct{}{}:
	default:
	}
}

// StreamFault is the error publishes are refused with while the publisher
// is suspended (SetStreamFault), nil otherwise.
func (p *Publisher) StreamFault() error {
	if f := p.fault.Load(); f != nil {
		return f.err
	}
	return nil
}

// PublishAlert stores ev and waits for its acknowledgement even while the
// publisher is suspended, in either mode: it is for the event that reports
// the stream fault itself, stored if the stream still takes it.
func (p *Publisher) PublishAlert(ctx context.Context, ev Event) error {
	if p.isClosing() {
		return ErrPublisherClosed
	}
	return p.publishStrict(ctx, ev)
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
		p.pipe.close()
		if err != nil {
			n := p.pending.Load()
			p.log.Error("audit publisher closed with events not stored", "events", n, "error", err)
			p.closeErr = fmt.Errorf("%w: publisher closed with %d events not stored: %v", ErrAuditUnavailable, n, err)
		}
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

// publishStrict encodes and sends evs pipelined, each as soon as it is
// encoded so the server works while the rest are encoded, and waits for
// all their acknowledgements at once. Messages belong to the pipe once
// sent.
func (p *Publisher) publishStrict(ctx context.Context, evs ...Event) error {
	w := p.waiters.Get().(*waiter)
	w.err, w.cause = nil, nil
	w.left.Store(int32(len(evs)))
	w.deadline = p.pipe.now() + p.ackTimeout
	w.timer.Reset(p.ackTimeout)
	for i, ev := range evs {
		m, err := p.encode(ctx, ev)
		if err != nil {
			// The events sent so far may be stored; the caller learns
			// that the batch failed, and publishing it again stores
			// each event once. The waiter is left to them.
			w.timer.Stop()
			for range len(evs) - i {
				w.resolve(err)
			}
			return err
		}
		m.w = w
		p.published.Add(1)
		if err := p.pipe.send(m); err != nil {
			m.w = nil
			p.recycle(m)
			w.resolve(err)
		}
	}
	select {
	case <-w.done:
		w.timer.Stop()
		err := w.err
		p.waiters.Put(w)
		if err != nil {
			return p.unavailable(ctx, err)
		}
		return nil
	case <-w.timer.C:
		return p.unavailable(ctx, w.lastCause())
	case <-ctx.Done():
		w.timer.Stop()
		return p.unavailable(ctx, ctx.Err())
	}
}

// unavailable turns the cause of a failed publish into the error callers
// see: ErrAuditUnavailable with the cause, or the caller's own context
// error when the caller gave up first.
func (p *Publisher) unavailable(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("events: publish abandoned: %w", ctx.Err())
	}
	switch {
	case errors.Is(err, errNoAck):
		return fmt.Errorf("%w: no acknowledgement from JetStream within %s", ErrAuditUnavailable, p.ackTimeout)
	case errors.Is(err, errNoStream):
		// NATS answers "no responders" both when the stream is missing and
		// while a cluster elects the stream's new leader, so name both.
		return fmt.Errorf("%w: no stream answered for %s (the %s stream is missing, or its cluster is electing a leader)", ErrAuditUnavailable, AuditSubjects, AuditStream)
	}
	return fmt.Errorf("%w: %v", ErrAuditUnavailable, err)
}

// onResolved learns the fate of every message the pipe sent.
func (p *Publisher) onResolved(m *outMsg, dup bool, err error) {
	if err == nil {
		p.acked.Add(1)
		if dup {
			p.duplicates.Add(1)
		}
	}
	if w := m.w; w != nil {
		wait := min(retryMin<<m.tries, 250*time.Millisecond)
		if err != nil && retryable(err) && p.pipe.now()+wait < w.deadline {
			// A cluster electing a stream leader answers "no responders"
			// or 503 for a moment; the caller's deadline allows a resend.
			w.setCause(err)
			m.tries++
			time.AfterFunc(wait, func() {
				p.retried.Add(1)
				p.published.Add(1)
				if err := p.pipe.send(m); err != nil {
					m.w = nil
					p.recycle(m)
					w.resolve(err)
				}
			})
			return
		}
		m.w = nil
		p.recycle(m)
		w.resolve(err)
		return
	}
	<-p.slots
	if err != nil {
		p.warn("audit event not stored, retrying", "id", m.id, "error", err)
		p.addRetry(m)
		return
	}
	p.progress.Store(true)
	p.recycle(m)
	p.done()
}

func (p *Publisher) recycle(m *outMsg) {
	if cap(m.msg.Data) > recycleLimit {
		m.msg.Data = nil
	}
	m.msg.Data = m.msg.Data[:0]
	m.msg.Reply = ""
	m.id, m.hdrID[0], m.w, m.tries = "", "", nil, 0
	p.msgs.Put(m)
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
