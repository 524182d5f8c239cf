package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
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
	roles    map[string]access.Role
	tokens   map[string]Token
	dbs      map[string]Database
	beats    map[string]events.DBHeartbeat // by escaped database name
	beatCh   chan struct{}                 // closed and replaced on every heartbeat change
	cas      map[string]CA
	requests map[string]AccessRequest
	locks    map[string]Lock

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
		users:    map[string]User{},
		roles:    map[string]access.Role{},
		tokens:   map[string]Token{},
		dbs:      map[string]Database{},
		beats:    map[string]events.DBHeartbeat{},
		beatCh:   make(chan struct{}),
		cas:      map[string]CA{},
		requests: map[string]AccessRequest{},
		locks:    map[string]Lock{},
		done:     make(chan struct{}),
		intern:   newInterner(),
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

// heartbeatsBucket binds to DB_HEARTBEATS, creating it with the replicas of
// STATE if no broker has yet. It never updates an existing bucket: an agent
// must not change what the broker configured.
func heartbeatsBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, HeartbeatsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		cfg := heartbeatsConfig()
		cfg.Replicas = replicas
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, HeartbeatsBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("state: key-value bucket %s: %w", HeartbeatsBucket, err)
	}
	return kv, nil
}

func heartbeatsConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      HeartbeatsBucket,
		Description: "Latest db.heartbeat of each database, by database name",
		History:     1,
		// A heartbeat older than a day says nothing any TTL could use; the
		// bucket forgets it so deleted databases leave nothing behind.
		TTL:     24 * time.Hour,
		Storage: jetstream.FileStorage,
	}
}

func (p *Projection) followHeartbeats(w jetstream.KeyWatcher, ready chan struct{}) {
	defer func() { _ = w.Stop() }()
	readyOnce := sync.OnceFunc(func() { close(ready) })
	defer readyOnce()
	for e := range w.Updates() {
		if e == nil {
			readyOnce() // initial values delivered
			continue
		}
		p.mu.Lock()
		switch e.Operation() {
		case jetstream.KeyValuePut:
			var hb events.DBHeartbeat
			if err := json.Unmarshal(e.Value(), &hb); err != nil {
				p.skipped++
				p.lastErr = fmt.Errorf("heartbeat %s: %w", e.Key(), err)
			} else {
				p.beats[e.Key()] = hb
			}
		default:
			delete(p.beats, e.Key())
		}
		close(p.beatCh)
		p.beatCh = make(chan struct{})
		p.mu.Unlock()
	}
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
		delete(p.users, e.Name)
	case *events.UserPasswordSet:
		if u, ok := p.users[e.Name]; ok {
			u.PasswordSet, u.PasswordSetAt, u.InviteExpires, u.Updated = true, h.Time, time.Time{}, h.Time
			p.users[e.Name] = u
		}
	case *events.RoleCreate:
		p.roles[e.Role.Metadata.Name] = e.Role
	case *events.RoleUpdate:
		p.roles[e.Role.Metadata.Name] = e.Role
	case *events.RoleDelete:
		delete(p.roles, e.Name)
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

// waitBeat blocks until the heartbeat of database key has id.
func (p *Projection) waitBeat(ctx context.Context, key, id string) error {
	for {
		p.mu.RLock()
		got, ch, closed := p.beats[key].ID == id, p.beatCh, p.closed
		p.mu.RUnlock()
		switch {
		case got:
			return nil
		case closed:
			return ErrClosed
		}
		select {
		case <-ch:
		case <-p.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Users returns every user, sorted by name.
func (p *Projection) Users() []User {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]User, 0, len(p.users))
	for _, u := range p.users {
		out = append(out, u.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// User returns one user.
func (p *Projection) User(name string) (User, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	u, ok := p.users[name]
	return u.clone(), ok
}

// Roles returns the built-in roles and every stored role, sorted by name.
func (p *Projection) Roles() []access.Role {
	p.mu.RLock()
	out := make([]access.Role, 0, len(p.roles)+4)
	for _, r := range p.roles {
		out = append(out, cloneRole(r))
	}
	p.mu.RUnlock()
	out = append(out, access.Builtin()...)
	sort.Slice(out, func(i, j int) bool { return out[i].Metadata.Name < out[j].Metadata.Name })
	return out
}

// Role returns a stored or built-in role.
func (p *Projection) Role(name string) (access.Role, bool) {
	if r, ok := access.BuiltinRole(name); ok {
		return r, true
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	r, ok := p.roles[name]
	if !ok {
		return access.Role{}, false
	}
	return cloneRole(r), true
}

// ResolveRoles returns the roles named, in order, and the names that name
// no role (a role deleted after a certificate was issued grants nothing).
func (p *Projection) ResolveRoles(names []string) (roles []access.Role, missing []string) {
	for _, n := range names {
		if r, ok := p.Role(n); ok {
			roles = append(roles, r)
		} else {
			missing = append(missing, n)
		}
	}
	return roles, missing
}

// Tokens returns every join token, sorted by creation time.
func (p *Projection) Tokens() []Token {
	p.mu.RLock()
	out := slices.Collect(maps.Values(p.tokens))
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Token returns one join token by id (TokenID of its value).
func (p *Projection) Token(id string) (Token, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	t, ok := p.tokens[id]
	return t, ok
}

// Databases returns every registered database, live or expired, sorted by
// name.
func (p *Projection) Databases() []Database {
	p.mu.RLock()
	out := make([]Database, 0, len(p.dbs))
	for _, d := range p.dbs {
		out = append(out, p.withBeat(d))
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LiveDatabases returns the databases whose heartbeats have not stopped at
// now.
func (p *Projection) LiveDatabases(now time.Time) []Database {
	all := p.Databases()
	out := all[:0]
	for _, d := range all {
		if !d.Expired(now) {
			out = append(out, d)
		}
	}
	return out
}

// Database returns one database, live or expired.
func (p *Projection) Database(name string) (Database, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	d, ok := p.dbs[name]
	if !ok {
		return Database{}, false
	}
	return p.withBeat(d), true
}

func (p *Projection) withBeat(d Database) Database {
	d = d.clone()
	if hb, ok := p.beats[escapeKey(d.Name)]; ok {
		d.LastHeartbeat, d.HeartbeatHost = hb.Time, hb.HostID
	}
	return d
}

// CAs returns the published CA certificates, sorted by type.
func (p *Projection) CAs() []CA {
	p.mu.RLock()
	out := make([]CA, 0, len(p.cas))
	for _, c := range p.cas {
		out = append(out, c.clone())
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// CA returns the published certificates of one authority (user, host, db,
// db-client).
func (p *Projection) CA(typ string) (CA, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	c, ok := p.cas[typ]
	return c.clone(), ok
}

// AccessRequests returns every access request, oldest first.
func (p *Projection) AccessRequests() []AccessRequest {
	p.mu.RLock()
	out := make([]AccessRequest, 0, len(p.requests))
	for _, r := range p.requests {
		out = append(out, r.clone())
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// AccessRequest returns one access request.
func (p *Projection) AccessRequest(id string) (AccessRequest, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	r, ok := p.requests[id]
	return r.clone(), ok
}

// Locks returns every lock, expired or not, oldest first.
func (p *Projection) Locks() []Lock {
	p.mu.RLock()
	out := slices.Collect(maps.Values(p.locks))
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Lock returns one lock.
func (p *Projection) Lock(id string) (Lock, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	l, ok := p.locks[id]
	return l, ok
}

// LockedOut returns the first lock in force at now that stops a session of
// user holding roles with session id sid ("" for a new session).
func (p *Projection) LockedOut(now time.Time, user string, roles []string, sid string) (Lock, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, l := range p.locks {
		if l.Matches(now, user, roles, sid) {
			return l, true
		}
	}
	return Lock{}, false
}

// Snapshot copies the whole projection.
func (p *Projection) Snapshot() Snapshot {
	p.mu.RLock()
	defer p.mu.RUnlock()
	s := Snapshot{
		Seq:            p.seq,
		Users:          make(map[string]User, len(p.users)),
		Roles:          make(map[string]access.Role, len(p.roles)),
		Tokens:         maps.Clone(p.tokens),
		Databases:      make(map[string]Database, len(p.dbs)),
		CAs:            make(map[string]CA, len(p.cas)),
		AccessRequests: make(map[string]AccessRequest, len(p.requests)),
		Locks:          maps.Clone(p.locks),
	}
	for k, v := range p.users {
		s.Users[k] = v.clone()
	}
	for k, v := range p.roles {
		s.Roles[k] = cloneRole(v)
	}
	for k, v := range p.dbs {
		s.Databases[k] = p.withBeat(v)
	}
	for k, v := range p.cas {
		s.CAs[k] = v.clone()
	}
	for k, v := range p.requests {
		s.AccessRequests[k] = v.clone()
	}
	return s
}
