package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrAuditUnavailable says an event was not stored. In strict mode the
// action it records must not happen; the error wraps the cause.
var ErrAuditUnavailable = errors.New("audit store unavailable")

// ErrHeld accompanies ErrAuditUnavailable when the events were accepted
// but not stored in time: the publisher holds them and stores them when the
// store is back, so the caller must not publish them again (they would be
// stored twice). Without ErrHeld, nothing of the call was accepted.
var ErrHeld = errors.New("events held by the publisher until the store is back")

// ErrPublisherClosed is returned by a Publisher after Close.
var ErrPublisherClosed = errors.New("events: publisher closed")

// Defaults of the publisher options.
const (
	DefaultAckTimeout     = 2 * time.Second
	DefaultQueueSize      = 65536
	DefaultMaxMessageSize = 1 << 20
	// minMessageSize leaves room for a frame of one event after its large
	// fields are cut.
	minMessageSize = 4096
	// framesInFlight is how many frames wait for their acknowledgement at
	// once. With one, every gate waits for the frame before its own as
	// well (measured: strict pgbench -S prepared at 8 clients 6,883 tps
	// against 7,498 with four in the same conditions); with four, a gate's
	// events leave at once unless four frames are being stored, and then
	// they ride the next one with every other session's (group commit).
	framesInFlight = 4
	// frameReserve is room kept in a frame for its header and trailer
	// beside the certificate and the session ids, which are counted.
	frameReserve = 512
	// recycleLimit keeps buffers that grew for a very large frame out of
	// the pool.
	recycleLimit = 1 << 20
)

// Publisher stores events in the AUDIT stream, many events per message: a
// writer goroutine cuts every event accepted so far into a frame (see
// frame.go) whenever the previous frame is acknowledged. It is safe for
// concurrent use. In strict mode Publish returns once the frame holding the
// event is acknowledged; in async mode once the event is accepted. Either
// way an accepted event is resent in its frame until it is stored.
//
// Session events are chained here, in the order they are accepted: each
// gets prev, the hash of the session's previous event, and the session's
// end is sealed with the signer's key. Frames are chained and signed too.
type Publisher struct {
	js         jetstream.JetStream
	pipe       *ackPipe
	cluster    string
	subject    string
	src, run   string
	mode       Mode
	ackTimeout time.Duration
	queueSize  int
	maxMsg     int
	log        *slog.Logger
	signer     atomic.Pointer[Signer]

	mu sync.Mutex
	// open holds accepted events not yet in a frame, spare the slice
	// the writer swaps in when it takes them.
	open, spare []pending
	// backlog counts accepted events not yet stored; room is closed and
	// replaced when it shrinks.
	backlog  int
	room     chan struct{}
	inflight int
	idle     chan struct{}
	// fseq and prev chain the run's frames (cutMu).
	fseq uint64
	prev string
	// lastSigned is when the writer last signed a frame, tailUnsigned
	// whether a frame went out unsigned since (cutMu).
	lastSigned   time.Time
	tailUnsigned bool

	chains sync.Map // sid → *chain

	// cutMu is held by the goroutine cutting and sending frames (pump):
	// fseq, prev, lastSigned and tailUnsigned are its.
	cutMu sync.Mutex

	kick      chan struct{}
	closing   chan struct{}
	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
	closeErr  error

	msgs    sync.Pool // *outMsg
	waiters sync.Pool // *waiter
	bufs    sync.Pool // *[]byte, event encodings

	published, acked, frames, duplicates, retried, truncated atomic.Uint64
	blocked                                                  atomic.Int64

	largeMu sync.Mutex
	large   jetstream.ObjectStore

	lastWarn atomic.Int64
	// lastErr is why the frame in flight was last refused, nil once one
	// is stored: the cause a strict caller is told when its own frame was
	// not even sent in time.
	lastErr atomic.Pointer[error]

	// fault is set while the AUDIT stream is missing or weakened
	// (SetStreamFault); frames are not cut meanwhile.
	fault atomic.Pointer[streamFault]
}

// pending is one accepted event waiting for its frame.
type pending struct {
	data []byte
	buf  *[]byte // pooled storage of data, returned once the frame is built
	sid  string
	time time.Time
	w    *waiter
	// ends marks a session's end: its frame is signed.
	ends bool
}

// chain is the hash of the last accepted event of a session.
type chain struct {
	mu   sync.Mutex
	last string
}

// streamFault is the error strict publishes return while it is set.
type streamFault struct{ err error }

// outMsg is one frame on its way to JetStream.
type outMsg struct {
	msg   nats.Msg
	hdrID []string
	id    string
	// n is the number of events, waiters the strict callers waiting for
	// this frame (each counted once per frame it waits for).
	n       int
	waiters []*waiter
	// sending is the pipe sequence number + 1 while the pipe sends it.
	sending atomic.Uint64
	tries   int
}

// waiter completes when every frame holding events of one strict Publish
// or PublishBatch is stored. It is pooled, unless its caller gave up before
// it completed: late resolutions may still touch it then.
type waiter struct {
	left  atomic.Int32
	done  chan struct{}
	timer *time.Timer
	mu    sync.Mutex
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
	if w.cause != nil {
		return w.cause
	}
	return errNoAck
}

func (w *waiter) resolve() {
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
		run:        NewID(),
		room:       make(chan struct{}),
		kick:       make(chan struct{}, 1),
		closing:    make(chan struct{}),
		stop:       make(chan struct{}),
		stopped:    make(chan struct{}),
	}
	for _, o := range opts {
		if err := o(p); err != nil {
			return nil, fmt.Errorf("events: new publisher: %w", err)
		}
	}
	if p.src == "" {
		p.src = defaultSource()
	}
	p.subject = "audit." + cluster + "." + FrameSubject + "." + p.src
	p.prev = FrameGenesis(p.run)
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
	p.bufs.New = func() any { b := make([]byte, 0, 1024); return &b }
	go p.write()
	return p, nil
}

// defaultSource names the writer after the host: the token a frame's
// subject and header carry.
func defaultSource() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "tollgate"
	}
	h = strings.Map(func(r rune) rune {
		if r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f {
			return '-'
		}
		return r
	}, h)
	return h
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

// Source is the writer name frames carry (src) and their subject ends with.
func (p *Publisher) Source() string { return p.src }

// SetSigner makes the publisher sign every frame it cuts from now on, and
// seal every session end, with s (nil: stop signing).
func (p *Publisher) SetSigner(s *Signer) { p.signer.Store(s) }

// Publish stamps ev (id, type, code, time, cluster where empty) and stores
// it: in strict mode it returns once its frame is acknowledged, or an error
// wrapping ErrAuditUnavailable within the ack timeout (and ErrHeld when the
// event was accepted and will still be stored).
func (p *Publisher) Publish(ctx context.Context, ev Event) error {
	return p.PublishBatch(ctx, []Event{ev})
}

// PublishBatch stores evs in order. In strict mode it waits for every
// frame holding them. On an error without ErrHeld none of them was
// accepted and the batch may be published again; with ErrHeld they were
// accepted and must not be.
func (p *Publisher) PublishBatch(ctx context.Context, evs []Event) error {
	if p.isClosing() {
		return ErrPublisherClosed
	}
	if len(evs) == 0 {
		return nil
	}
	if p.mode == ModeStrict {
		if f := p.fault.Load(); f != nil {
			return f.err
		}
		return p.publishStrict(ctx, evs)
	}
	for _, ev := range evs {
		if err := p.reserve(ctx, 1, true); err != nil {
			return err
		}
		if err := p.accept(ctx, ev, nil); err != nil {
			p.release(1)
			return err
		}
	}
	return nil
}

// SetStreamFault suspends the publisher while the AUDIT stream is missing
// or weakened (fault, e.g. a *StreamFault from a Guard) and resumes it when
// fault is nil. While suspended, a strict Publish or PublishBatch returns at
// once an error wrapping ErrAuditUnavailable and fault, so the action is
// refused rather than recorded where it could be lost or erased. An async
// publisher keeps accepting events but cuts no frame until resumed: its
// backlog then fills and blocks producers, so nothing is dropped and
// nothing goes to the weakened stream. Frames already sent are not recalled.
func (p *Publisher) SetStreamFault(fault error) {
	if fault == nil {
		p.fault.Store(nil)
	} else {
		p.fault.Store(&streamFault{err: fmt.Errorf("%w: %w", ErrAuditUnavailable, fault)})
	}
	p.wake()
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
// the stream fault itself, stored if the stream still takes it. It goes in
// a frame of its own (a run of one frame), outside the writer's queue that
// the fault holds.
func (p *Publisher) PublishAlert(ctx context.Context, ev Event) error {
	if p.isClosing() {
		return ErrPublisherClosed
	}
	return p.publishSolo(ctx, ev)
}

// Flush waits until every accepted event is stored. With producers still
// publishing it returns once the publisher is idle at some instant.
func (p *Publisher) Flush(ctx context.Context) error {
	for {
		p.mu.Lock()
		if p.backlog == 0 {
			p.mu.Unlock()
			return nil
		}
		if p.idle == nil {
			p.idle = make(chan struct{})
		}
		ch, n := p.idle, p.backlog
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("events: flush: %d events not yet stored: %w", n, ctx.Err())
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
		<-p.stopped
		p.pipe.close()
		if err != nil {
			p.mu.Lock()
			n := p.backlog
			p.mu.Unlock()
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

// publishStrict accepts evs with one waiter and waits for every frame that
// holds them. The waiter starts with one count of its own, dropped once
// every event is accepted, so frames cut (and stored) while later events
// are still being accepted cannot complete it early.
func (p *Publisher) publishStrict(ctx context.Context, evs []Event) error {
	if err := p.reserve(ctx, len(evs), false); err != nil {
		return err
	}
	w := p.waiters.Get().(*waiter)
	w.cause = nil
	w.left.Store(1)
	w.timer.Reset(p.ackTimeout)
	for i, ev := range evs {
		if err := p.accept(ctx, ev, w); err != nil {
			p.release(len(evs) - i)
			w.timer.Stop()
			if i == 0 {
				p.waiters.Put(w)
				return err
			}
			// The events before it are accepted and will be stored: the
			// caller must not send them again; this one and those after
			// it leave a gap in the session that verify reports.
			w.resolve()
			p.log.Error("audit: a batch was accepted only in part", "accepted", i, "of", len(evs), "error", err)
			return fmt.Errorf("%w: %w: %d of %d events accepted: %v", ErrAuditUnavailable, ErrHeld, i, len(evs), err)
		}
	}
	w.resolve()
	select {
	case <-w.done:
		w.timer.Stop()
		p.waiters.Put(w)
		return nil
	case <-w.timer.C:
		cause := w.lastCause()
		if le := p.lastErr.Load(); errors.Is(cause, errNoAck) && le != nil {
			cause = *le
		}
		return p.held(ctx, cause)
	case <-ctx.Done():
		w.timer.Stop()
		return p.held(ctx, ctx.Err())
	}
}

// held is the error of a strict publish whose events were accepted but not
// stored in time.
func (p *Publisher) held(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("events: publish abandoned: %w (%w)", ctx.Err(), ErrHeld)
	}
	return fmt.Errorf("%w (%w)", p.unavailable(err), ErrHeld)
}

// unavailable turns the cause of a failed store into ErrAuditUnavailable
// with a cause a user can act on.
func (p *Publisher) unavailable(err error) error {
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

// reserve counts n events into the backlog. A strict caller is refused at
// once when the backlog is full (the store has been failing for a while);
// an async caller waits for room, so nothing is dropped.
func (p *Publisher) reserve(ctx context.Context, n int, wait bool) error {
	var start time.Time
	for {
		p.mu.Lock()
		if p.backlog+n <= p.queueSize || p.backlog == 0 {
			p.backlog += n
			p.mu.Unlock()
			if !start.IsZero() {
				p.blocked.Add(int64(time.Since(start)))
			}
			return nil
		}
		room, backlog := p.room, p.backlog
		p.mu.Unlock()
		if !wait {
			return fmt.Errorf("%w: %d events wait to be stored (the backlog is full)", ErrAuditUnavailable, backlog)
		}
		if start.IsZero() {
			start = time.Now()
		}
		select {
		case <-room:
		case <-ctx.Done():
			return fmt.Errorf("events: audit backlog full (%d events) until the context ended: %w", backlog, ctx.Err())
		case <-p.closing:
			return ErrPublisherClosed
		}
	}
}

// release takes n events out of the backlog: stored, or never accepted.
func (p *Publisher) release(n int) {
	p.mu.Lock()
	p.backlog -= n
	close(p.room)
	p.room = make(chan struct{})
	if p.backlog == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.mu.Unlock()
}

// warn logs at most once a second, so a store that is down for a while
// does not flood the log with one line per frame.
func (p *Publisher) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := p.lastWarn.Load()
	if now-last < int64(time.Second) || !p.lastWarn.CompareAndSwap(last, now) {
		return
	}
	p.log.Warn(msg, args...)
}
