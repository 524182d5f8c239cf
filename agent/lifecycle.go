package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// startupGrace is how long a connection may go without a session (its
// protocol's startup and the access decision) before the lifecycle ends
// it like a session.
const startupGrace = 2 * time.Second

// StateSource is what the lifecycle reads of the control plane: locks,
// access requests and roles. *state.Projection and *state.Store are one,
// and IdentitySource too.
type StateSource interface {
	// Seq changes whenever the state does.
	Seq() uint64
	LockedOut(now time.Time, user string, roles []string, sid string) (state.Lock, bool)
	AccessRequest(id string) (state.AccessRequest, bool)
	ResolveRoles(names []string) ([]access.Role, []string)
}

// IdentitySource is a StateSource that knows the users: the lifecycle
// then refuses and ends the sessions of removed users, and of users who
// lost a role their session needed.
type IdentitySource interface {
	// CurrentIdentity is a certificate's identity as the state has it
	// now: an error for a removed user, roles cut to those still held.
	CurrentIdentity(now time.Time, id identity.Identity) (identity.Identity, error)
}

// TerminateFunc ends a live session in the protocol's own way: it tells
// the client message (for PostgreSQL an ErrorResponse FATAL, for MySQL an
// ERR packet) and closes both sides. reason is one of the events.End*
// constants and must become the reason of the session's db.session.end.
// It is called at most once, from its own goroutine.
type TerminateFunc func(reason, message string)

// Cancel is what a CancelFunc did.
type Cancel struct {
	// Method says how, in the protocol's terms ("cancel request to
	// backend 4242", "KILL QUERY 17", "attention"); empty when nothing
	// was running.
	Method string
	// Confirmed is set once the database answered that the statement
	// stopped (the session's answer came, or the attention was
	// acknowledged).
	Confirmed bool
}

// CancelFunc stops the statement a session is running in the database
// before the lifecycle ends the session: closing the connection alone
// leaves it running (pg_sleep, a long UPDATE). It also keeps the client's
// next messages from reaching the database. It returns by ctx's end at
// the latest, with what it did so far.
type CancelFunc func(ctx context.Context) (Cancel, error)

// LifecycleOptions tune a Lifecycle.
type LifecycleOptions struct {
	// Interval is how often live sessions are checked against the state,
	// their certificate and grant ends and their idle time (50ms).
	Interval time.Duration
	// Grace is how long a TerminateFunc may take before the connection is
	// closed under it (2s).
	Grace time.Duration
	// CancelWait bounds how long a running statement's cancel may take
	// before the session is ended anyway (1.5s).
	CancelWait time.Duration
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Lifecycle ends live sessions when the control plane says so: their user
// removed, or a role they needed taken from them; a lock that
// matches their user, one of their roles or their session id; the end of
// their certificate (disconnect_expired_cert, on unless every role that
// sets it turns it off) or of the access request that granted their roles;
// and client_idle_timeout. It also refuses new sessions while a lock holds
// or a grant is over (Authorizer). Every ending is a db.session.terminate
// event in the session, followed by its db.session.end with the same
// reason.
//
// Engines take part through ClientConn.OnTerminate, which hands the
// lifecycle a TerminateFunc once the session is open; a connection whose
// engine gave none is simply closed.
type Lifecycle struct {
	src      StateSource
	interval time.Duration
	grace    time.Duration
	wait     time.Duration
	now      func() time.Time
	log      *slog.Logger

	mu   sync.Mutex
	live map[*ClientConn]*liveConn
	kick chan struct{}
	// decide is the access decision Authorizer wraps: a session whose
	// user lost roles is decided again with the roles left.
	decide Authorizer
}

// NewLifecycle returns a lifecycle reading src; Run must run for it to act
// on live sessions.
func NewLifecycle(src StateSource, o LifecycleOptions) *Lifecycle {
	if o.Interval <= 0 {
		o.Interval = 50 * time.Millisecond
	}
	if o.Grace <= 0 {
		o.Grace = 2 * time.Second
	}
	if o.CancelWait <= 0 {
		o.CancelWait = 1500 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Lifecycle{src: src, interval: o.Interval, grace: o.Grace, wait: o.CancelWait, now: o.Now, log: o.Logger,
		live: map[*ClientConn]*liveConn{}, kick: make(chan struct{}, 1)}
}

// liveConn is one client connection with a verified identity.
type liveConn struct {
	cc       *ClientConn
	activity *activityConn
	// Derived from the identity's roles at admission.
	disconnectExpired bool
	idleTimeout       time.Duration
	admitted          time.Time
	// seq is the state sequence locks were last checked at; 0 until the
	// first check, so a connection admitted between a lock and the next
	// tick is still checked against it.
	seq uint64

	mu     sync.Mutex
	sess   *Session
	term   TerminateFunc
	cancel CancelFunc
	ended  bool
}

// Run checks live sessions until ctx ends.
func (l *Lifecycle) Run(ctx context.Context) {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.kick:
		}
		l.check()
	}
}

// Notify asks for a check now (a STATE event arrived: state.OnApply can
// call it), instead of at the next tick.
func (l *Lifecycle) Notify() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Live returns the session ids of live sessions (those whose engine opened
// one), for tests and diagnostics.
func (l *Lifecycle) Live() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, lc := range l.live {
		lc.mu.Lock()
		if lc.sess != nil && !lc.ended {
			out = append(out, lc.sess.ID)
		}
		lc.mu.Unlock()
	}
	return out
}

// check ends every live session something now ends: locks only when the
// state changed since the connection was last checked; grants,
// certificate ends and idleness every time.
func (l *Lifecycle) check() {
	seq := l.src.Seq()
	l.mu.Lock()
	conns := make([]*liveConn, 0, len(l.live))
	for _, lc := range l.live {
		conns = append(conns, lc)
	}
	l.mu.Unlock()
	now := l.now()
	for _, lc := range conns {
		if why := l.ending(lc, now, seq); why != nil {
			l.end(lc, why)
		}
	}
}

// ending is why lc must end now, or nil.
func (l *Lifecycle) ending(lc *liveConn, now time.Time, seq uint64) *endReason {
	id := lc.cc.Identity
	lc.mu.Lock()
	sid, sess := "", lc.sess
	if sess != nil {
		sid = sess.ID
	}
	ended := lc.ended
	stateChanged := lc.seq != seq
	lc.seq = seq
	lc.mu.Unlock()
	if ended {
		return nil
	}
	if sid == "" && now.Sub(lc.admitted) < startupGrace {
		// Still starting: the access decision (Authorizer) refuses it
		// with the reason in the protocol's form; closing it now would
		// only swallow that message. Engines that never hand over a
		// session are closed once the grace is over.
		return nil
	}
	if stateChanged {
		cur, err := l.current(now, id)
		if err != nil {
			return &endReason{reason: events.EndLocked, message: "session ended: " + err.Error()}
		}
		if lk, ok := l.src.LockedOut(now, id.User, id.Roles, sid); ok {
			return lockReason(lk, id)
		}
		if why := l.rolesTaken(id, cur, sess); why != nil {
			return why
		}
	}
	if why := l.grantOver(id, now); why != nil {
		return why
	}
	if lc.disconnectExpired && !id.Expires.IsZero() && !now.Before(id.Expires) {
		return &endReason{reason: events.EndCertExpired,
			message: fmt.Sprintf("session ended: the certificate of %s expired at %s; log in again with tg login", id.User, id.Expires.UTC().Format(time.RFC3339))}
	}
	if lc.idleTimeout > 0 {
		if idle := now.Sub(lc.activity.last()); idle >= lc.idleTimeout {
			return &endReason{reason: events.EndIdleTimeout, idle: idle,
				message: fmt.Sprintf("session ended: the client sent nothing for %s (client_idle_timeout %s)", idle.Round(time.Second), lc.idleTimeout)}
		}
	}
	return nil
}

// grantOver says why the access requests an identity carries no longer
// grant anything: one is not approved any more, or its time is up.
func (l *Lifecycle) grantOver(id identity.Identity, now time.Time) *endReason {
	for _, rid := range id.AccessRequests {
		r, ok := l.src.AccessRequest(rid)
		switch {
		case !ok:
			return &endReason{reason: events.EndAccessExpired, requestID: rid,
				message: fmt.Sprintf("session ended: access request %s is unknown to this agent", rid)}
		case r.State == state.RequestApproved && now.Before(r.Expires):
			continue
		case r.State == state.RequestApproved || r.State == state.RequestExpired:
			return &endReason{reason: events.EndAccessExpired, requestID: rid,
				message: fmt.Sprintf("session ended: the access granted by request %s (roles %s) ended at %s; ask again with tg request create",
					rid, strings.Join(r.Roles, ","), r.Expires.UTC().Format(time.RFC3339))}
		default:
			return &endReason{reason: events.EndAccessExpired, requestID: rid,
				message: fmt.Sprintf("session ended: access request %s is %s", rid, r.State)}
		}
	}
	return nil
}

// current is id as the state has it now, when the source knows users.
func (l *Lifecycle) current(now time.Time, id identity.Identity) (identity.Identity, error) {
	if is, ok := l.src.(IdentitySource); ok {
		return is.CurrentIdentity(now, id)
	}
	return id, nil
}

// rolesTaken says why a session must end because its user no longer
// holds roles of the certificate that the session needed: the access
// decision, made again with the roles left, refuses it.
func (l *Lifecycle) rolesTaken(cert, cur identity.Identity, sess *Session) *endReason {
	dropped := state.DroppedRoles(cert, cur)
	if len(dropped) == 0 || sess == nil || sess.Database == nil {
		return nil
	}
	l.mu.Lock()
	decide := l.decide
	l.mu.Unlock()
	if decide == nil {
		return nil
	}
	d := decide(cur, sess.Database.Info(), sess.DBUser, sess.DBName)
	if d.Allowed {
		return nil
	}
	return &endReason{reason: events.EndLocked,
		message: fmt.Sprintf("session ended: user %s no longer holds role %s, and the roles left do not allow this session: %s",
			cert.User, strings.Join(dropped, ", "), d.Refusal(sess.DBUser, sess.DBName))}
}

type endReason struct {
	reason, message string
	lockID          string
	requestID       string
	idle            time.Duration
}

func lockReason(lk state.Lock, id identity.Identity) *endReason {
	what := ""
	switch {
	case lk.TargetUser != "":
		what = "user " + lk.TargetUser + " is locked"
	case lk.TargetRole != "":
		what = "role " + lk.TargetRole + " (held by " + id.User + ") is locked"
	default:
		what = "this session is locked"
	}
	msg := "session ended: " + what
	if lk.Message != "" {
		msg += ": " + lk.Message
	}
	return &endReason{reason: events.EndLocked, message: msg, lockID: lk.ID}
}

// end terminates lc once: what the session runs in the database is
// cancelled (bounded by the cancel wait), the terminate event goes into
// the session, the engine tells the client, and the connection is closed
// after the grace period whatever the engine did.
func (l *Lifecycle) end(lc *liveConn, why *endReason) {
	lc.mu.Lock()
	if lc.ended {
		lc.mu.Unlock()
		return
	}
	lc.ended = true
	sess, term, cancel := lc.sess, lc.term, lc.cancel
	lc.mu.Unlock()
	l.log.Info("agent: ending session", "user", lc.cc.Identity.User, "reason", why.reason, "message", why.message)
	if term == nil {
		l.record(sess, why, nil)
		lc.cc.Close()
		return
	}
	go func() {
		ev := &events.SessionTerminate{}
		if cancel != nil {
			l.cancel(sess, cancel, ev)
		}
		l.record(sess, why, ev)
		go term(why.reason, why.message)
		time.AfterFunc(l.grace, func() { lc.cc.Close() })
	}()
}

// cancel runs a session's CancelFunc within the cancel wait and notes
// what it did in ev.
func (l *Lifecycle) cancel(sess *Session, cancel CancelFunc, ev *events.SessionTerminate) {
	ctx, stop := context.WithTimeout(context.Background(), l.wait)
	defer stop()
	start := time.Now()
	c, err := cancel(ctx)
	ev.Cancel, ev.CancelConfirmed = c.Method, c.Confirmed
	if c.Method != "" || err != nil {
		ev.CancelNs = time.Since(start).Nanoseconds()
	}
	if err == nil && c.Method != "" && !c.Confirmed {
		err = fmt.Errorf("the database did not confirm the cancel within %s", l.wait)
	}
	if err != nil {
		ev.CancelError = err.Error()
		sid := ""
		if sess != nil {
			sid = sess.ID
		}
		l.log.Warn("agent: cancelling the running statement", "sid", sid, "err", err)
	}
}

// record puts the terminate event (ev, when the cancel filled it) into
// the session.
func (l *Lifecycle) record(sess *Session, why *endReason, ev *events.SessionTerminate) {
	if sess == nil {
		return
	}
	if ev == nil {
		ev = &events.SessionTerminate{}
	}
	ev.Reason, ev.Message, ev.LockID, ev.RequestID, ev.IdleNs = why.reason, why.message, why.lockID, why.requestID, why.idle.Nanoseconds()
	if err := sess.Emit(ev); err != nil && !errors.Is(err, ErrSessionClosed) {
		l.log.Error("agent: cannot record session termination", "sid", sess.ID, "err", err)
	}
}

// Authorizer wraps next with the lifecycle's refusals: a removed user, a
// lock on the user or one of their roles, and access requests that no
// longer grant anything; next decides with the roles the user holds now.
// The engine records and reports the refusal as it does any denial.
func (l *Lifecycle) Authorizer(next Authorizer) Authorizer {
	l.mu.Lock()
	l.decide = next
	l.mu.Unlock()
	return func(id identity.Identity, db DatabaseInfo, dbUser, dbName string) Decision {
		now := l.now()
		cur, err := l.current(now, id)
		if err != nil {
			return Decision{Refused: RefusedIdentity, Reason: err.Error()}
		}
		if lk, ok := l.src.LockedOut(now, id.User, id.Roles, ""); ok {
			why := lockReason(lk, id)
			return Decision{Refused: "lock", Rule: "lock " + lk.ID,
				Reason: strings.TrimPrefix(why.message, "session ended: ")}
		}
		if why := l.grantOver(id, now); why != nil {
			return Decision{Refused: "access request", Rule: "access request " + why.requestID,
				Reason: strings.TrimPrefix(why.message, "session ended: ")}
		}
		return next(cur, db, dbUser, dbName)
	}
}

// admit starts following a connection whose identity was verified; the
// returned func stops following it.
func (l *Lifecycle) admit(cc *ClientConn, act *activityConn) func() {
	roles, _ := l.src.ResolveRoles(cc.Identity.Roles)
	lc := &liveConn{cc: cc, activity: act, admitted: l.now(), disconnectExpired: disconnectExpiredCert(roles),
		idleTimeout: access.Options(roles).ClientIdleTimeout}
	l.mu.Lock()
	l.live[cc] = lc
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.live, cc)
		l.mu.Unlock()
	}
}

// disconnectExpiredCert is on by default: only roles that turn it off
// explicitly, with none turning it on, keep a session past its
// certificate.
func disconnectExpiredCert(roles []access.Role) bool {
	on, off := false, false
	for i := range roles {
		if v := roles[i].Spec.Options.DisconnectExpiredCert; v != nil {
			if *v {
				on = true
			} else {
				off = true
			}
		}
	}
	return on || !off
}

// live returns the lifecycle's record of c, nil when c is not under a
// lifecycle (or no longer live).
func (c *ClientConn) live() *liveConn {
	if c.Env == nil || c.Env.life == nil {
		return nil
	}
	l := c.Env.life
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live[c]
}

// OnTerminate is how an engine takes part in the lifecycle: once it opened
// the session s for this connection, it hands over the function that ends
// it in the protocol's own form. Until then (or when an engine never calls
// it) an ending closes the connection.
func (c *ClientConn) OnTerminate(s *Session, fn TerminateFunc) {
	lc := c.live()
	if lc == nil {
		return
	}
	lc.mu.Lock()
	lc.sess, lc.term = s, fn
	lc.mu.Unlock()
	// A session lock may already name it in a race with a fresh id only
	// in theory; a check now costs nothing and keeps the rule simple.
	c.Env.life.Notify()
}

// OnCancel hands the lifecycle the engine's CancelFunc for this
// connection's session, which it runs before the TerminateFunc. Call it
// before OnTerminate.
func (c *ClientConn) OnCancel(fn CancelFunc) {
	lc := c.live()
	if lc == nil {
		return
	}
	lc.mu.Lock()
	lc.cancel = fn
	lc.mu.Unlock()
}

// activityConn records when the client last sent anything, for
// client_idle_timeout.
type activityConn struct {
	net.Conn
	at atomic.Int64
}

func newActivityConn(c net.Conn) *activityConn {
	a := &activityConn{Conn: c}
	a.at.Store(time.Now().UnixNano())
	return a
}

func (a *activityConn) Read(p []byte) (int, error) {
	n, err := a.Conn.Read(p)
	if n > 0 {
		a.at.Store(time.Now().UnixNano())
	}
	return n, err
}

func (a *activityConn) last() time.Time { return time.Unix(0, a.at.Load()) }
