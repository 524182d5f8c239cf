package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/events"
)

// ErrClosed is returned by waits on a projection that stopped following.
var ErrClosed = errors.New("state: projection closed")

// Projection is the in-memory state built from the STATE stream. It is safe
// for concurrent use; every read returns a copy.
type Projection struct {
	mu      sync.RWMutex
	seq     uint64 // last stream sequence applied
	target  uint64 // last sequence of the initial replay
	skipped uint64 // messages of unknown types or that did not decode
	lastErr error  // the last decode or consumer error, for diagnostics
	waiters []waiter
	closed  bool

	users    map[string]User
	removed  map[string]time.Time // user name → when it was last removed
	roles    map[string]access.Role
	tokens   map[string]Token
	dbs      map[string]Database
	beats    map[string]events.DBHeartbeat // by escaped database name
	beatCh   chan struct{}                 // closed and replaced on every heartbeat change
	cas      map[string]CA
	requests map[string]AccessRequest
	locks    map[string]Lock
	// connectors are the single sign-on connectors, without secrets.
	connectors map[string]events.Connector

	onApply func(ev events.Event, live bool)

	noSnapshot    bool      // FromScratch
	snapSeq       uint64    // snapshot started from or last written
	streamCreated time.Time // identifies the STATE stream the projection follows
	intern        *interner // used by the delivery goroutine only
	cancel        context.CancelFunc
	cc            jetstream.ConsumeContext
	done          chan struct{}
}

type waiter struct {
	seq uint64
	ch  chan struct{}
}

// FollowOption configures Follow.
type FollowOption func(*Projection)

// OnApply calls fn after each event is applied, with live false during the
// initial replay and true afterwards (e.g. an agent ending the sessions a
// new lock matches). Events covered by the snapshot the projection started
// from are not replayed, so fn sees only the events after it: read the
// projection itself for the state. fn runs on the projection's delivery
// goroutine with no lock held; it must not block for long.
func OnApply(fn func(ev events.Event, live bool)) FollowOption {
	return func(p *Projection) { p.onApply = fn }
}

func newProjection() *Projection {
	return &Projection{
		users:      map[string]User{},
		removed:    map[string]time.Time{},
		roles:      map[string]access.Role{},
		tokens:     map[string]Token{},
		dbs:        map[string]Database{},
		beats:      map[string]events.DBHeartbeat{},
		beatCh:     make(chan struct{}),
		cas:        map[string]CA{},
		requests:   map[string]AccessRequest{},
		locks:      map[string]Lock{},
		connectors: map[string]events.Connector{},
		done:       make(chan struct{}),
		intern:     newInterner(),
	}
}

// Follow replays the STATE stream into a new projection and returns once it
// has caught up with the stream as it was when Follow was called; it then
// keeps following until ctx is done or Close is called. It starts from the
// latest usable snapshot in STATE_SNAPSHOTS when there is one (see
// FromScratch). It reads the DB_HEARTBEATS bucket too, creating it if no
// broker has yet.
func Follow(ctx context.Context, js jetstream.JetStream, opts ...FollowOption) (*Projection, error) {
	p := newProjection()
	for _, o := range opts {
		o(p)
	}
	if err := p.start(ctx, js); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Projection) start(ctx context.Context, js jetstream.JetStream) error {
	stream, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		return fmt.Errorf("state: stream %s: %w (create it with events.EnsureStreams)", events.StateStream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("state: stream %s: %w", events.StateStream, err)
	}
	target := info.State.LastSeq
	if info.State.Msgs == 0 {
		target = 0
	}
	p.target = target
	p.streamCreated = info.Created

	deliver := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if !p.noSnapshot && target > 0 {
		seq, err := p.loadSnapshot(ctx, js, info)
		if err != nil {
			p.mu.Lock()
			p.lastErr = fmt.Errorf("state: replaying from the start: %w", err)
			p.mu.Unlock()
		}
		if seq > 0 {
			deliver = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq + 1}
		}
	}

	runCtx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() {
		select {
		case <-ctx.Done():
			p.Close()
		case <-p.done:
		}
	}()

	kv, err := heartbeatsBucket(ctx, js, info.Config.Replicas)
	if err != nil {
		return err
	}
	watch, err := kv.WatchAll(runCtx)
	if err != nil {
		return fmt.Errorf("state: watch %s: %w", HeartbeatsBucket, err)
	}
	beatsReady := make(chan struct{})
	go p.followHeartbeats(watch, beatsReady)

	// No subject filter: STATE holds only state.> and an unfiltered
	// consumer spares the server a subject match per message.
	cons, err := stream.OrderedConsumer(ctx, deliver)
	if err != nil {
		return fmt.Errorf("state: consumer on %s: %w", events.StateStream, err)
	}
	p.cc, err = cons.Consume(p.handle,
		jetstream.PullMaxMessages(2048),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			p.mu.Lock()
			p.lastErr = err
			p.mu.Unlock()
		}))
	if err != nil {
		return fmt.Errorf("state: consume %s: %w", events.StateStream, err)
	}

	if err := p.WaitFor(ctx, target); err != nil {
		return fmt.Errorf("state: replay of %s to sequence %d: %w", events.StateStream, target, err)
	}
	select {
	case <-beatsReady:
	case <-ctx.Done():
		return fmt.Errorf("state: initial heartbeats: %w", ctx.Err())
	}
	return nil
}

// handle applies one message; the ordered consumer calls it in stream
// order from one goroutine.
func (p *Projection) handle(msg jetstream.Msg) {
	seq, ok := streamSeq(msg.Reply())
	if !ok {
		meta, err := msg.Metadata()
		if err != nil {
			p.mu.Lock()
			p.skipped++
			p.lastErr = err
			p.mu.Unlock()
			return
		}
		seq = meta.Sequence.Stream
	}
	ev, derr := decode(msg.Data(), p.intern)
	p.mu.Lock()
	p.seq = seq
	switch {
	case derr != nil:
		p.skipped++
		p.lastErr = fmt.Errorf("%s sequence %d: %w", msg.Subject(), seq, derr)
	case ev == nil:
		p.skipped++
	default:
		p.apply(ev)
	}
	live := seq > p.target
	if len(p.waiters) > 0 {
		p.wake()
	}
	p.mu.Unlock()
	if p.onApply != nil && ev != nil {
		p.onApply(ev, live)
	}
}

// streamSeq reads the stream sequence from a JetStream ack subject without
// allocating: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.… (9 tokens)
// or, from newer servers, $JS.ACK.<domain>.<account>.<stream>.<consumer>.
// <delivered>.<sseq>.… (11 or more). Anything else is left to
// Msg.Metadata.
func streamSeq(reply string) (uint64, bool) {
	const prefix = "$JS.ACK."
	if !strings.HasPrefix(reply, prefix) {
		return 0, false
	}
	tokens := strings.Count(reply, ".") + 1
	var idx int
	switch {
	case tokens == 9:
		idx = 5
	case tokens >= 11:
		idx = 7
	default:
		return 0, false
	}
	rest := reply
	for range idx {
		i := strings.IndexByte(rest, '.')
		rest = rest[i+1:]
	}
	if i := strings.IndexByte(rest, '.'); i >= 0 {
		rest = rest[:i]
	}
	v, err := strconv.ParseUint(rest, 10, 64)
	return v, err == nil && v > 0
}

func (p *Projection) wake() {
	kept := p.waiters[:0]
	for _, w := range p.waiters {
		if p.seq >= w.seq {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	clear(p.waiters[len(kept):])
	p.waiters = kept
}

// apply changes the projection by one event. It trusts the event: commands
// validated it before it was stored. Changes to aggregates that do not
// exist are ignored rather than inventing them.
func (p *Projection) apply(ev events.Event) {
	h := ev.Header()
	switch e := ev.(type) {
	case *events.UserCreate:
		p.users[e.Name] = User{Name: e.Name, Roles: e.UserRoles, Traits: e.Traits,
			Created: h.Time, CreatedBy: h.User, Updated: h.Time, InviteExpires: e.InviteExpires}
	case *events.UserUpdate:
		if u, ok := p.users[e.Name]; ok {
			u.Roles, u.Traits, u.LockedUntil, u.LockReason, u.Updated = e.UserRoles, e.Traits, e.LockedUntil, e.LockReason, h.Time
			p.users[e.Name] = u
		}
	case *events.UserDelete:
		if _, ok := p.users[e.Name]; ok {
			p.removed[e.Name] = h.Time
		}
		delete(p.users, e.Name)
	case *events.UserPasswordSet:
		if u, ok := p.users[e.Name]; ok {
			u.PasswordSet, u.PasswordSetAt, u.InviteExpires, u.Updated = true, h.Time, time.Time{}, h.Time
			p.users[e.Name] = u
		}
	case *events.UserMFAAdd:
		if u, ok := p.users[e.Name]; ok {
			if e.Method == events.MFAWebAuthn {
				u.WebAuthn = true
			} else {
				u.TOTP = true
			}
			u.Updated = h.Time
			p.users[e.Name] = u
		}
	case *events.UserMFARemove:
		if u, ok := p.users[e.Name]; ok {
			u.TOTP, u.WebAuthn, u.Updated = e.TOTP, e.WebAuthn, h.Time
			p.users[e.Name] = u
		}
	case *events.RoleCreate:
		p.roles[e.Role.Metadata.Name] = e.Role
	case *events.RoleUpdate:
		p.roles[e.Role.Metadata.Name] = e.Role
	case *events.RoleDelete:
		delete(p.roles, e.Name)
	case *events.ConnectorCreate:
		p.connectors[e.Connector.Name] = e.Connector
	case *events.ConnectorUpdate:
		p.connectors[e.Connector.Name] = e.Connector
	case *events.ConnectorDelete:
		delete(p.connectors, e.Name)
	case *events.TokenCreate:
		p.tokens[e.TokenID] = Token{ID: e.TokenID, Type: e.TokenType, Expires: e.Expires,
			SingleUse: e.SingleUse, Created: h.Time, CreatedBy: h.User}
	case *events.TokenUse:
		if t, ok := p.tokens[e.TokenID]; ok && e.Success {
			t.Uses++
			t.LastUsed, t.LastUsedBy = h.Time, e.HostID
			p.tokens[e.TokenID] = t
		}
	case *events.DBCreate:
		p.dbs[e.Service] = Database{Name: e.Service, Protocol: e.Protocol, URI: e.URI, Labels: e.Labels,
			HostID: e.HostID, AgentAddr: e.AgentAddr, HeartbeatTTL: time.Duration(e.HeartbeatTTLNs), Registered: h.Time}
	case *events.DBDelete:
		delete(p.dbs, e.Service)
	case *events.CAPublish:
		p.cas[e.CAType] = CA{Type: e.CAType, CertPEM: e.CertPEM, Fingerprints: e.Fingerprints,
			Published: h.Time, PublishedBy: h.User}
	case *events.AccessRequestCreate:
		p.requests[e.RequestID] = AccessRequest{ID: e.RequestID, Requester: e.Requester, Roles: e.RequestRoles,
			Reason: e.Reason, Expires: e.Expires, State: RequestPending, Created: h.Time}
	case *events.AccessRequestUpdate:
		if r, ok := p.requests[e.RequestID]; ok {
			r.State, r.Updated, r.UpdatedBy, r.UpdateReason = e.State, h.Time, h.User, e.Reason
			p.requests[e.RequestID] = r
		}
	case *events.LockCreate:
		p.locks[e.LockID] = Lock{ID: e.LockID, TargetUser: e.TargetUser, TargetRole: e.TargetRole,
			TargetSession: e.TargetSession, Message: e.Message, Expires: e.Expires, Created: h.Time, CreatedBy: h.User}
	case *events.LockDelete:
		delete(p.locks, e.LockID)
	}
}

// Close stops following. Reads keep answering from the last state.
func (p *Projection) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for _, w := range p.waiters {
		close(w.ch)
	}
	p.waiters = nil
	cc, cancel := p.cc, p.cancel
	close(p.done)
	p.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
	if cancel != nil {
		cancel()
	}
}

// Seq is the last STATE sequence applied.
func (p *Projection) Seq() uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.seq
}

// Stats says how many messages were skipped (unknown types or undecodable)
// and the last error met, if any.
func (p *Projection) Stats() (skipped uint64, lastErr error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.skipped, p.lastErr
}

// WaitFor blocks until the projection has applied stream sequence seq.
func (p *Projection) WaitFor(ctx context.Context, seq uint64) error {
	p.mu.Lock()
	if p.seq >= seq {
		p.mu.Unlock()
		return nil
	}
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	ch := make(chan struct{})
	p.waiters = append(p.waiters, waiter{seq: seq, ch: ch})
	p.mu.Unlock()
	select {
	case <-ch:
		p.mu.RLock()
		defer p.mu.RUnlock()
		if p.seq < seq {
			return ErrClosed
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
