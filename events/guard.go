package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Advisory subjects JetStream publishes when the AUDIT stream is created,
// updated or deleted; the guard needs only to subscribe to them and to call
// $JS.API.STREAM.INFO.AUDIT.
const (
	AuditCreatedAdvisory = "$JS.EVENT.ADVISORY.STREAM.CREATED." + AuditStream
	AuditUpdatedAdvisory = "$JS.EVENT.ADVISORY.STREAM.UPDATED." + AuditStream
	AuditDeletedAdvisory = "$JS.EVENT.ADVISORY.STREAM.DELETED." + AuditStream
)

// Defaults of the guard options.
const (
	DefaultGuardInterval = 5 * time.Second
	DefaultGuardTimeout  = 2 * time.Second
)

// StreamFault says that a stream is missing or weaker than it must be:
// events stored in it could be lost or erased.
type StreamFault struct {
	Stream string
	// Missing is set when the stream does not exist (deleted).
	Missing bool
	// Defects name each difference, e.g. "storage is memory, want file".
	Defects []string
}

func (f *StreamFault) Error() string {
	if f.Missing {
		return f.Stream + " is missing"
	}
	return f.Stream + " was weakened: " + strings.Join(f.Defects, "; ")
}

// CheckAudit returns nil when info describes the AUDIT stream as
// EnsureStreams makes it with want, or a *StreamFault naming every way it
// is weaker; a nil info means the stream is missing. Limits looser than
// want (longer age, more bytes, more replicas) are accepted: they lose
// nothing.
func CheckAudit(info *jetstream.StreamInfo, want StreamOptions) error {
	if info == nil {
		return &StreamFault{Stream: AuditStream, Missing: true}
	}
	w, c := AuditStreamConfig(want), info.Config
	var d []string
	add := func(format string, args ...any) { d = append(d, fmt.Sprintf(format, args...)) }
	if c.Name != AuditStream {
		add("name is %q, want %q", c.Name, AuditStream)
	}
	if got, exp := slices.Sorted(slices.Values(c.Subjects)), slices.Sorted(slices.Values(w.Subjects)); !slices.Equal(got, exp) {
		add("subjects are %v, want %v", got, exp)
	}
	if c.Storage != w.Storage {
		add("storage is %s, want %s", strings.ToLower(c.Storage.String()), strings.ToLower(w.Storage.String()))
	}
	if c.Retention != w.Retention {
		add("retention is %s, want %s", strings.ToLower(c.Retention.String()), strings.ToLower(w.Retention.String()))
	}
	if c.Discard != w.Discard {
		add("discard is %s, want %s", discardName(c.Discard), discardName(w.Discard))
	}
	if c.Replicas < w.Replicas {
		add("replicas is %d, want %d", c.Replicas, w.Replicas)
	}
	if bad, msg := lowerLimit(int64(c.MaxAge), int64(w.MaxAge), durationText); bad {
		add("max_age is %s", msg)
	}
	if bad, msg := lowerLimit(c.MaxBytes, w.MaxBytes, bytesText); bad {
		add("max_bytes is %s", msg)
	}
	if bad, msg := lowerLimit(c.MaxMsgs, 0, countText); bad {
		add("max_msgs is %s", msg)
	}
	if bad, msg := lowerLimit(c.MaxMsgsPerSubject, 0, countText); bad {
		add("max_msgs_per_subject is %s", msg)
	}
	if c.Duplicates < w.Duplicates {
		add("duplicate_window is %s, want at least %s", c.Duplicates, w.Duplicates)
	}
	if !c.DenyDelete {
		add("deny_delete is off")
	}
	if !c.DenyPurge {
		add("deny_purge is off")
	}
	if c.AllowRollup {
		add("allow_rollup is on")
	}
	if c.Sealed {
		add("sealed is on")
	}
	if c.Mirror != nil {
		add("mirrors %s", c.Mirror.Name)
	}
	if len(d) == 0 {
		return nil
	}
	return &StreamFault{Stream: AuditStream, Defects: d}
}

// lowerLimit reports whether the limit got (zero or negative: unlimited)
// keeps less than want (likewise), and says so in words.
func lowerLimit(got, want int64, text func(int64) string) (bool, string) {
	if got <= 0 || (want > 0 && got >= want) {
		return false, ""
	}
	if want <= 0 {
		return true, text(got) + ", want unlimited"
	}
	return true, text(got) + ", want at least " + text(want)
}

func durationText(n int64) string { return time.Duration(n).String() }
func bytesText(n int64) string    { return fmt.Sprintf("%d bytes", n) }
func countText(n int64) string    { return fmt.Sprint(n) }

func discardName(p jetstream.DiscardPolicy) string {
	switch p {
	case jetstream.DiscardOld:
		return "old"
	case jetstream.DiscardNew:
		return "new"
	}
	return p.String()
}

// Guard watches the AUDIT stream: at start, on JetStream's advisories for
// it, and every interval. It calls its notify functions whenever its
// verdict changes: a *StreamFault when AUDIT is found missing or weakened
// (or weakened differently), nil when it is sound again.
type Guard struct {
	js       jetstream.JetStream
	want     StreamOptions
	interval time.Duration
	timeout  time.Duration
	log      *slog.Logger
	notify   []func(error)

	kick, deleted chan struct{}
	subs          []*nats.Subscription
	stopOnce      sync.Once
	stop          chan struct{}
	done          chan struct{}

	mu    sync.Mutex
	fault error
}

// settleDelays space the checks after an advisory: JetStream sends the
// one of a new stream before the stream answers stream info, so a check
// right away could find it still missing.
var settleDelays = []time.Duration{20 * time.Millisecond, 80 * time.Millisecond, 400 * time.Millisecond, time.Second}

// GuardOption configures a Guard.
type GuardOption func(*Guard) error

// WithGuardInterval sets how often the guard checks AUDIT besides the
// advisories (DefaultGuardInterval).
func WithGuardInterval(d time.Duration) GuardOption {
	return func(g *Guard) error {
		if d <= 0 {
			return fmt.Errorf("guard interval %s: must be positive", d)
		}
		g.interval = d
		return nil
	}
}

// WithGuardTimeout bounds one stream info request (DefaultGuardTimeout).
func WithGuardTimeout(d time.Duration) GuardOption {
	return func(g *Guard) error {
		if d <= 0 {
			return fmt.Errorf("guard timeout %s: must be positive", d)
		}
		g.timeout = d
		return nil
	}
}

// WithGuardNotify adds a function called, one call at a time, on every
// change of verdict: the fault, or nil when AUDIT is sound again. The
// guard starts out assuming AUDIT is sound.
func WithGuardNotify(fn func(fault error)) GuardOption {
	return func(g *Guard) error {
		if fn == nil {
			return errors.New("guard notify function is nil")
		}
		g.notify = append(g.notify, fn)
		return nil
	}
}

// WithGuardLogger sets where the guard reports checks it could not make.
func WithGuardLogger(l *slog.Logger) GuardOption {
	return func(g *Guard) error {
		if l == nil {
			return errors.New("logger is nil")
		}
		g.log = l
		return nil
	}
}

// StartGuard checks AUDIT against want once, then keeps watching it until
// ctx ends or Stop. The first check must get an answer (the stream's
// configuration, or that it is missing): an error says the guard cannot
// see AUDIT, e.g. for lack of permission. Later checks that get no answer
// keep the last verdict and are logged. The server refuses a subscription
// the account may not make only in an asynchronous error (the connection's
// error handler); the periodic check still runs then.
func StartGuard(ctx context.Context, js jetstream.JetStream, want StreamOptions, opts ...GuardOption) (*Guard, error) {
	if js == nil {
		return nil, errors.New("events: start guard: JetStream is nil")
	}
	want = want.withDefaults()
	if err := want.validate(); err != nil {
		return nil, fmt.Errorf("events: start guard: stream options: %w", err)
	}
	g := &Guard{
		js:       js,
		want:     want,
		interval: DefaultGuardInterval,
		timeout:  DefaultGuardTimeout,
		log:      slog.Default(),
		kick:     make(chan struct{}, 1),
		deleted:  make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	for _, o := range opts {
		if err := o(g); err != nil {
			return nil, fmt.Errorf("events: start guard: %w", err)
		}
	}
	// Subscribed before the first check, so no change after it goes unseen.
	nc := js.Conn()
	for subj, ch := range map[string]chan struct{}{
		AuditCreatedAdvisory: g.kick, AuditUpdatedAdvisory: g.kick, AuditDeletedAdvisory: g.deleted,
	} {
		sub, err := nc.Subscribe(subj, func(*nats.Msg) { signal(ch) })
		if err != nil {
			g.unsubscribe()
			return nil, fmt.Errorf("events: start guard: subscribe to %s: %w", subj, err)
		}
		g.subs = append(g.subs, sub)
	}
	fctx, cancel := context.WithTimeout(ctx, g.timeout)
	err := nc.FlushWithContext(fctx)
	cancel()
	if err == nil {
		err = g.check(ctx)
	}
	if err != nil {
		g.unsubscribe()
		return nil, fmt.Errorf("events: start guard of stream %s: %w", AuditStream, err)
	}
	go g.run(ctx)
	return g, nil
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Fault is the current verdict: nil while AUDIT is sound.
func (g *Guard) Fault() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fault
}

// Stop ends the watch and waits for it; safe to call more than once.
func (g *Guard) Stop() {
	g.stopOnce.Do(func() { close(g.stop) })
	<-g.done
}

func (g *Guard) unsubscribe() {
	for _, s := range g.subs {
		_ = s.Unsubscribe()
	}
}

func (g *Guard) run(ctx context.Context) {
	defer close(g.done)
	defer g.unsubscribe()
	ticker := time.NewTicker(g.interval)
	defer ticker.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	settled := len(settleDelays)
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.stop:
			return
		case <-g.deleted:
			// Seen even when the stream is made again before the next
			// check: what it held is gone.
			g.set(&StreamFault{Stream: AuditStream, Missing: true})
			settled = 0
		case <-g.kick:
			settled = 0
		case <-settle.C:
		case <-ticker.C:
		}
		if settled < len(settleDelays) {
			settle.Reset(settleDelays[settled])
			settled++
		}
		if err := g.check(ctx); err != nil && ctx.Err() == nil {
			if !failing {
				g.log.Warn("cannot check the AUDIT stream; keeping the last verdict", "fault", g.Fault(), "error", err)
			}
			failing = true
			continue
		}
		failing = false
	}
}

// check asks for AUDIT's configuration and sets the verdict; an error
// means no answer.
func (g *Guard) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	var info *jetstream.StreamInfo
	s, err := g.js.Stream(ctx, AuditStream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return err
	default:
		info = s.CachedInfo()
	}
	g.set(CheckAudit(info, g.want))
	return nil
}

// set records a verdict and notifies when it differs from the last one.
// Only the guard's own goroutine (or StartGuard before it) calls it.
func (g *Guard) set(fault error) {
	g.mu.Lock()
	prev := g.fault
	same := (prev == nil) == (fault == nil) && (fault == nil || prev.Error() == fault.Error())
	g.fault = fault
	g.mu.Unlock()
	if same {
		return
	}
	for _, fn := range g.notify {
		fn(fault)
	}
}

// GuardPublisher starts a guard of AUDIT that suspends pub while AUDIT is
// missing or weakened and resumes it once AUDIT is sound (see
// Publisher.SetStreamFault), logging each change at error or info level.
// It returns after the first check; stop the guard (or end ctx) before
// closing pub. Extra notify functions may be given in opts.
func GuardPublisher(ctx context.Context, js jetstream.JetStream, pub *Publisher, want StreamOptions, opts ...GuardOption) (*Guard, error) {
	if pub == nil {
		return nil, errors.New("events: guard publisher: publisher is nil")
	}
	notify := func(fault error) {
		pub.SetStreamFault(fault)
		if fault != nil {
			pub.log.Error("audit stream weakened: strict publishing refused until it is restored", "stream", AuditStream, "fault", fault.Error(), "mode", pub.mode)
			return
		}
		pub.log.Info("audit stream restored: publishing resumed", "stream", AuditStream)
	}
	opts = append([]GuardOption{WithGuardLogger(pub.log), WithGuardNotify(notify)}, opts...)
	return StartGuard(ctx, js, want, opts...)
}
