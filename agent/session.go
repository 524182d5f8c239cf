package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/events"
)

// DefaultQueueLimit bounds the events of one session waiting for the async
// path; an emitter blocks beyond it rather than drop anything.
const DefaultQueueLimit = 4096

// DefaultLinger is how long an emitted event waits for company before the
// background publisher takes it. Every separate publish costs a pass through
// the whole store path (our writer, the server's reader, the stream, the
// acknowledgement back), several goroutine wake-ups that cost far more CPU
// than the event itself, so events travel together where they can: a
// statement's result rides with the session's next gated batch, which in a
// busy session comes well within the linger. The wait only delays storing
// what the database already answered; nothing waits for it.
const DefaultLinger = time.Millisecond

// queueRoom is the capacity a session's emptied queue starts again with:
// a statement's result and the next statement's events (see Gate).
const queueRoom = 8

// lingerBatch is the queue length at which the background publisher takes
// the queue without waiting out the linger.
const lingerBatch = 256

// ErrSessionClosed is returned by Gate after Close.
var ErrSessionClosed = errors.New("session closed")

// AuditError is returned by Gate when the audit store did not take the
// events of a client batch: the batch must not be forwarded.
type AuditError struct{ Err error }

func (e *AuditError) Error() string {
	msg := e.Err.Error()
	if strings.HasPrefix(msg, "audit store unavailable") {
		return msg
	}
	return "audit store unavailable: " + msg
}

func (e *AuditError) Unwrap() error { return e.Err }

// Session is one client session on a database. It owns the session id and
// the gapless event index: every event it emits gets the next ei, the
// envelope's user and roles and the database fields, so engines only fill
// what their protocol knows.
//
// Client-to-server events go through Gate: in strict mode Gate returns once
// the store has them, and the engine forwards the batch only then. Events of
// a refused batch keep their id and ei and are published again, first, with
// the next batch (the store deduplicates by id), so ei stays gapless.
// Server-to-client events go through Emit, a per-session queue published in
// ei order in the background, retried until stored and never dropped; the
// next gate carries whatever is queued, so a busy session stores a
// statement's result together with its next statement.
type Session struct {
	ID       string
	Identity identity.Identity
	Database *Database
	DBUser   string
	DBName   string
	Started  time.Time
	// Options are the session options of the roles that allowed it.
	Options access.RoleOptions

	cluster string
	rec     Recorder
	strict  bool
	log     *slog.Logger
	bg      context.Context
	limit   int

	// gateMu serialises gates so pending events are published before
	// anything gated after them.
	gateMu  sync.Mutex
	pending []events.Event

	mu sync.Mutex
	// cond wakes the background publisher (due, closing); space wakes
	// emitters blocked on a full queue. Apart, because every gate takes
	// the queue: on one condition that woke the publisher to find nothing
	// due, a goroutine hand-off per statement.
	cond    *sync.Cond
	space   *sync.Cond
	next    uint64
	queue   []events.Event
	closing bool
	closed  bool
	done    chan struct{}
	dbh     events.Database

	// linger is how long queued events may wait for the next gate; the
	// timer then marks them due for the background publisher.
	linger time.Duration
	timer  *time.Timer
	armed  bool // timer runs for the queue's oldest event
	due    bool // the background publisher should take the queue now
}

// SessionOptions configures NewSession.
type SessionOptions struct {
	Cluster  string
	Recorder Recorder
	Identity identity.Identity
	Database *Database
	DBUser   string
	DBName   string
	// Background bounds the async publishing of this session: it keeps
	// retrying until the events are stored or Background is done.
	Background context.Context
	Logger     *slog.Logger
	// QueueLimit defaults to DefaultQueueLimit.
	QueueLimit int
	// ID defaults to a new event id.
	ID string
}

// NewSession starts a session and its background publisher.
func NewSession(o SessionOptions) *Session {
	s := &Session{
		ID: o.ID, Identity: o.Identity, Database: o.Database, DBUser: o.DBUser, DBName: o.DBName,
		Started: time.Now(), cluster: o.Cluster, rec: o.Recorder, log: o.Logger, bg: o.Background,
		limit: o.QueueLimit, done: make(chan struct{}), strict: true, linger: DefaultLinger,
	}
	if s.ID == "" {
		s.ID = events.NewID()
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.bg == nil {
		s.bg = context.Background()
	}
	if s.limit <= 0 {
		s.limit = DefaultQueueLimit
	}
	if o.Database != nil {
		s.strict = o.Database.Strict
		s.dbh = events.Database{Service: o.Database.Config.Name, Protocol: o.Database.Config.Protocol, URI: o.Database.Config.URI}
	}
	s.dbh.User, s.dbh.Name = o.DBUser, o.DBName
	s.cond = sync.NewCond(&s.mu)
	s.space = sync.NewCond(&s.mu)
	s.timer = time.AfterFunc(time.Hour, s.lingered)
	s.timer.Stop()
	go s.drain()
	return s
}

// lingered marks the queue due once its oldest event has waited long
// enough for a gate to carry it.
func (s *Session) lingered() {
	s.mu.Lock()
	s.armed = false
	if len(s.queue) > 0 {
		s.due = true
		s.cond.Broadcast()
	}
	s.mu.Unlock()
}

// queued appends ev, already stamped, to the background queue and decides
// when the background publisher takes it. s.mu held.
func (s *Session) queued(ev events.Event) {
	if s.queue == nil {
		// Room for the next gate's events too: Gate appends them to the
		// queue it carries rather than copying both into a new batch.
		s.queue = make([]events.Event, 0, queueRoom)
	}
	s.queue = append(s.queue, ev)
	switch {
	case len(s.queue) >= min(lingerBatch, s.limit):
		s.due = true
		s.cond.Broadcast()
	case !s.armed:
		s.armed = true
		s.timer.Reset(s.linger)
	}
}

// takeQueue hands the queued events to the caller, which publishes them.
// s.mu held.
func (s *Session) takeQueue() []events.Event {
	q := s.queue
	s.queue, s.due = nil, false
	if s.armed {
		s.timer.Stop()
		s.armed = false
	}
	// Emitters blocked on a full queue may go on.
	s.space.Broadcast()
	return q
}

// Strict reports whether client messages wait for their events to be stored.
func (s *Session) Strict() bool { return s.strict }

// SetDB updates db_user and db_name for events emitted from now on (a
// protocol may learn them after the session began).
func (s *Session) SetDB(dbUser, dbName string) {
	s.mu.Lock()
	s.DBUser, s.DBName = dbUser, dbName
	s.dbh.User, s.dbh.Name = dbUser, dbName
	s.mu.Unlock()
}

// Gate records the events of one client batch. In strict mode it returns
// nil only once the store holds them (and every earlier refused event); on
// error it returns an *AuditError and the caller must forward nothing. In
// async mode it queues them and returns nil.
func (s *Session) Gate(ctx context.Context, evs ...events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	if !s.strict {
		return s.Emit(evs...)
	}
	s.gateMu.Lock()
	defer s.gateMu.Unlock()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrSessionClosed
	}
	// Events emitted since the last gate (the previous statement's result)
	// are older than evs and go with them: one pass through the store for
	// both, in ei order. A longer queue is the background path's: a gate
	// stays the size of a statement.
	var carried []events.Event
	if len(s.queue) < lingerBatch {
		carried = s.takeQueue()
	}
	for _, ev := range evs {
		if err := s.stamp(ev); err != nil {
			s.queue = append(carried, s.queue...)
			s.due = len(s.queue) > 0
			s.cond.Broadcast()
			s.mu.Unlock()
			return err
		}
	}
	s.mu.Unlock()
	batch := evs
	switch {
	case len(s.pending) == 0 && len(carried) > 0:
		// The carried queue is this gate's own now (takeQueue), usually
		// with room for evs (queueRoom).
		batch = append(carried, evs...)
	case len(s.pending) > 0:
		batch = make([]events.Event, 0, len(s.pending)+len(carried)+len(evs))
		batch = append(append(append(batch, s.pending...), carried...), evs...)
		if len(carried) > 0 {
			slices.SortStableFunc(batch, compareEI)
		}
	}
	if err := s.rec.PublishBatch(ctx, batch); err != nil {
		if errors.Is(err, events.ErrHeld) {
			// The recorder accepted them and stores them once it can:
			// sent again, they would be stored twice. The statement
			// still does not run.
			s.pending = nil
			return &AuditError{Err: err}
		}
		// The refused events are published first with the next batch, or
		// when the session closes. The carried ones describe what already
		// happened, so they go back to the background path, which retries
		// them on its own.
		s.keepPending(evs...)
		if len(carried) > 0 {
			s.mu.Lock()
			// Copied: batch may share carried's array, and the
			// recorder saw batch.
			s.queue = append(slices.Clip(carried), s.queue...)
			s.due = true
			s.cond.Broadcast()
			s.mu.Unlock()
		}
		return &AuditError{Err: err}
	}
	// The recorder may keep the slice (an async publisher queues it), so
	// it is never reused.
	s.pending = nil
	return nil
}

// Refused records that a client batch was refused because the store was
// unavailable. The record is kept with the refused events and published
// first with the next batch, or when the session closes.
func (s *Session) Refused(ev events.Event) {
	s.gateMu.Lock()
	defer s.gateMu.Unlock()
	s.mu.Lock()
	err := s.stamp(ev)
	s.mu.Unlock()
	if err != nil {
		s.log.Error("audit: cannot record refusal", "sid", s.ID, "err", err)
		return
	}
	s.keepPending(ev)
}

// keepPending keeps refused events for the next gate. s.gateMu held.
func (s *Session) keepPending(evs ...events.Event) {
	s.pending = append(s.pending, evs...)
	if len(s.pending) < lingerBatch {
		return
	}
	// A client that keeps retrying through a long outage would otherwise
	// make every later gate resend all its refusals, until a gate is too
	// big to be stored within the ack timeout. Past a batch they go to the
	// background path, which stores them once the store is back.
	s.mu.Lock()
	s.queue = append(s.queue, s.pending...)
	slices.SortStableFunc(s.queue, compareEI)
	s.due = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.pending = nil
}

// Emit queues events for the async path: they get their ei now and are
// published in that order in the background. It blocks while the session's
// queue is full, so nothing is dropped.
func (s *Session) Emit(evs ...events.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) >= s.limit && !s.closed {
		s.space.Wait()
	}
	if s.closing {
		return ErrSessionClosed
	}
	for _, ev := range evs {
		if err := s.stamp(ev); err != nil {
			return err
		}
		s.queued(ev)
	}
	return nil
}

// Close ends the session: end (when not nil) gets the last ei, every event
// still pending or queued is published in the background, and the returned
// channel is closed once all are stored (or the background context ended).
func (s *Session) Close(end events.Event) <-chan struct{} {
	s.gateMu.Lock()
	defer s.gateMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return s.done
	}
	if len(s.pending) > 0 {
		s.queue = append(s.queue, s.pending...)
		s.pending = nil
		slices.SortStableFunc(s.queue, func(a, b events.Event) int {
			return compareEI(a, b)
		})
	}
	if end != nil {
		if err := s.stamp(end); err != nil {
			s.log.Error("audit: cannot stamp session end", "sid", s.ID, "err", err)
		} else {
			s.queue = append(s.queue, end)
		}
	}
	s.closing = true
	s.due = true
	s.cond.Broadcast()
	return s.done
}

func compareEI(a, b events.Event) int {
	ea, eb := eiOf(a), eiOf(b)
	switch {
	case ea < eb:
		return -1
	case ea > eb:
		return 1
	}
	return 0
}

func eiOf(ev events.Event) uint64 {
	if se, ok := ev.(events.SessionEvent); ok {
		return se.SessionHeader().EI
	}
	return 0
}

// NextEI is the index the next event will get.
func (s *Session) NextEI() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

func (s *Session) drain() {
	defer close(s.done)
	backoff := 20 * time.Millisecond
	for {
		s.mu.Lock()
		for (len(s.queue) == 0 || !s.due) && !s.closing {
			s.cond.Wait()
		}
		if len(s.queue) == 0 {
			s.closed = true
			s.timer.Stop()
			s.space.Broadcast()
			s.mu.Unlock()
			// The recorder chains a session's events until its end; a
			// session closed without one (refused before it began) is
			// forgotten here.
			if ec, ok := s.rec.(interface{ EndChain(sid string) }); ok {
				ec.EndChain(s.ID)
			}
			return
		}
		batch := s.takeQueue()
		s.mu.Unlock()
		for {
			err := s.rec.PublishBatch(s.bg, batch)
			if err == nil || errors.Is(err, events.ErrHeld) {
				// Held: the recorder stores them once it can, and its
				// Close waits for them.
				backoff = 20 * time.Millisecond
				break
			}
			if s.bg.Err() != nil {
				s.log.Error("audit: events of a session could not be stored before shutdown",
					"sid", s.ID, "events", len(batch), "first_ei", eiOf(batch[0]), "err", err)
				s.mu.Lock()
				s.closed, s.queue = true, nil
				s.space.Broadcast()
				s.mu.Unlock()
				return
			}
			s.log.Warn("audit: store unavailable, retrying", "sid", s.ID, "events", len(batch), "err", err)
			select {
			case <-time.After(backoff):
			case <-s.bg.Done():
			}
			backoff = min(backoff*2, 2*time.Second)
		}
	}
}

// stamp fills the session fields of ev and gives it the next ei. s.mu held.
func (s *Session) stamp(ev events.Event) error {
	se, ok := ev.(events.SessionEvent)
	if !ok {
		return fmt.Errorf("audit: %T is not a session event", ev)
	}
	h := ev.Header()
	if h.User == "" {
		h.User, h.Roles = s.Identity.User, s.Identity.Roles
	}
	sh := se.SessionHeader()
	sh.SID, sh.EI = s.ID, s.next
	if d := databaseOf(ev); d != nil && d.Service == "" {
		*d = s.dbh
	}
	if err := events.Stamp(ev, s.cluster); err != nil {
		return err
	}
	s.next++
	return nil
}

var (
	dbType     = reflect.TypeFor[events.Database]()
	dbFieldIdx sync.Map // reflect.Type → []int (nil when the type has none)
)

// databaseOf returns the embedded events.Database of ev, if any: through
// its promoted DatabaseHeader method, else (a Database field that is not
// embedded) by reflection, with the field index looked up once per type.
func databaseOf(ev events.Event) *events.Database {
	if d, ok := ev.(interface{ DatabaseHeader() *events.Database }); ok {
		return d.DatabaseHeader()
	}
	v := reflect.ValueOf(ev)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	t := v.Elem().Type()
	idx, ok := dbFieldIdx.Load(t)
	if !ok {
		var found []int
		if f, ok := t.FieldByName("Database"); ok && f.Type == dbType {
			found = f.Index
		}
		idx, _ = dbFieldIdx.LoadOrStore(t, found)
	}
	if idx.([]int) == nil {
		return nil
	}
	return v.Elem().FieldByIndex(idx.([]int)).Addr().Interface().(*events.Database)
}
