// Package requests is the access-request workflow: a user asks for extra
// roles for a while with a reason, reviewers approve or deny, and an
// approved request lets its requester reissue a certificate carrying the
// roles until the grant ends.
//
// A request is an aggregate of the STATE stream under
// state.access_request.<id>: access_request.create, one
// access_request.review per verdict, and access_request.update when it
// leaves pending (approved, denied, expired) or when an approved grant
// runs out (expired). The Service follows those subjects into its own
// projection, reviews included, and appends with the subject's expected
// last sequence, so two brokers reviewing at once cannot both decide; the
// loser re-reads and tries again. broker/state applies the same create and
// update events, which is what agents read to check a grant.
//
// Rules come from roles (broker/access): allow.request.roles says who may
// ask for what, allow.review_requests.roles who may review it; the
// requester's request conditions set the approvals needed (one denial
// denies), the longest grant (max_duration) and how long a request may wait
// (pending_ttl). Nobody reviews their own request. The editor role may
// review any request, as it could grant the roles outright anyway.
package requests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// Errors, wrapped with what they concern; the state errors (ErrNotFound,
// ErrInvalid, ErrConflict) are used where they fit so the API maps them to
// HTTP statuses.
var (
	// ErrForbidden: the caller may not do this (request a role, review a
	// request, use a grant).
	ErrForbidden = errors.New("forbidden")
)

// Review is one reviewer's verdict.
type Review struct {
	Reviewer string    `json:"reviewer"`
	Verdict  string    `json:"verdict"`
	Reason   string    `json:"reason,omitempty"`
	Time     time.Time `json:"time"`
}

// Request is an access request with its reviews.
type Request struct {
	ID        string    `json:"id"`
	Requester string    `json:"requester"`
	Roles     []string  `json:"roles"`
	Reason    string    `json:"reason,omitempty"`
	State     string    `json:"state"`
	Created   time.Time `json:"created"`
	// Expires is when the grant ends (and when a request still pending
	// then lapses).
	Expires time.Time `json:"expires"`
	// PendingUntil is when a pending request lapses without reviews.
	PendingUntil    time.Time `json:"pending_until,omitzero"`
	ApprovalsNeeded int       `json:"approvals_needed"`
	Reviews         []Review  `json:"reviews,omitempty"`
	// Updated, UpdatedBy and UpdateReason come from the last state change.
	Updated      time.Time `json:"updated,omitzero"`
	UpdatedBy    string    `json:"updated_by,omitempty"`
	UpdateReason string    `json:"update_reason,omitempty"`
}

// Counts returns the approvals and denials so far.
func (r Request) Counts() (approvals, denials int) {
	for _, v := range r.Reviews {
		switch v.Verdict {
		case events.ReviewApprove:
			approvals++
		case events.ReviewDeny:
			denials++
		}
	}
	return approvals, denials
}

func (r Request) clone() Request {
	r.Roles = slices.Clone(r.Roles)
	r.Reviews = slices.Clone(r.Reviews)
	return r
}

// Options tune a Service.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Sweep is how often Run looks for requests to expire (1s).
	Sweep time.Duration
	Log   *slog.Logger
	// Actor is who the broker is in the expiry events it writes.
	Actor state.Actor
}

// Service is the workflow over a broker's state.
type Service struct {
	store   *state.Store
	js      jetstream.JetStream
	cluster string
	now     func() time.Time
	sweep   time.Duration
	log     *slog.Logger
	actor   state.Actor

	mu       sync.RWMutex
	reqs     map[string]*Request
	subjSeq  map[string]uint64
	seq      uint64
	waiters  []waiter
	closed   bool
	cc       jetstream.ConsumeContext
	lastErr  error
	skipped  uint64
	updateCh chan struct{} // closed and replaced on every change
}

type waiter struct {
	seq uint64
	ch  chan struct{}
}

// Filter is the STATE subject filter of every access request.
var Filter = events.StateSubject(state.AggAccessRequest, ">")

// New replays the access requests of STATE and follows them until Close.
func New(ctx context.Context, js jetstream.JetStream, store *state.Store, o Options) (*Service, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sweep <= 0 {
		o.Sweep = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Actor.User == "" {
		o.Actor = state.Actor{User: "tollgate:broker"}
	}
	s := &Service{store: store, js: js, cluster: store.Cluster(), now: o.Now, sweep: o.Sweep, log: o.Log, actor: o.Actor,
		reqs: map[string]*Request{}, subjSeq: map[string]uint64{}, updateCh: make(chan struct{})}
	stream, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		return nil, fmt.Errorf("requests: stream %s: %w", events.StateStream, err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(Filter))
	if err != nil {
		return nil, fmt.Errorf("requests: stream %s: %w", events.StateStream, err)
	}
	target := info.State.LastSeq
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{Filter}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("requests: consumer on %s: %w", Filter, err)
	}
	s.cc, err = cons.Consume(s.handle, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
	}))
	if err != nil {
		return nil, fmt.Errorf("requests: consume %s: %w", Filter, err)
	}
	// target is the stream's last sequence, which may belong to another
	// subject: wait for the last access-request message instead.
	if target > 0 {
		if m, err := stream.GetLastMsgForSubject(ctx, Filter); err == nil {
			target = m.Sequence
		} else {
			target = 0
		}
	}
	if err := s.waitFor(ctx, target); err != nil {
		s.Close()
		return nil, fmt.Errorf("requests: replay: %w", err)
	}
	return s, nil
}

// Close stops following.
func (s *Service) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for _, w := range s.waiters {
		close(w.ch)
	}
	s.waiters = nil
	cc := s.cc
	s.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
}

func (s *Service) handle(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	ev, derr := decode(msg.Data())
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := meta.Sequence.Stream
	s.seq = seq
	s.subjSeq[msg.Subject()] = seq
	if derr != nil {
		s.skipped++
		s.lastErr = derr
	} else if ev != nil {
		s.apply(ev)
		close(s.updateCh)
		s.updateCh = make(chan struct{})
	}
	kept := s.waiters[:0]
	for _, w := range s.waiters {
		if s.seq >= w.seq {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	clear(s.waiters[len(kept):])
	s.waiters = kept
}

func decode(data []byte) (events.Event, error) {
	var env struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, err
	}
	var ev events.Event
	switch env.Type {
	case "access_request.create":
		ev = new(events.AccessRequestCreate)
	case "access_request.review":
		ev = new(events.AccessRequestReview)
	case "access_request.update":
		ev = new(events.AccessRequestUpdate)
	default:
		return nil, nil
	}
	if err := json.Unmarshal(data, ev); err != nil {
		return nil, fmt.Errorf("%s: %w", env.Type, err)
	}
	return ev, nil
}

// apply changes the projection by one event. s.mu held.
func (s *Service) apply(ev events.Event) {
	h := ev.Header()
	switch e := ev.(type) {
	case *events.AccessRequestCreate:
		s.reqs[e.RequestID] = &Request{ID: e.RequestID, Requester: e.Requester, Roles: e.RequestRoles,
			Reason: e.Reason, State: state.RequestPending, Created: h.Time, Expires: e.Expires}
	case *events.AccessRequestReview:
		if r, ok := s.reqs[e.RequestID]; ok {
			r.Reviews = append(r.Reviews, Review{Reviewer: h.User, Verdict: e.Verdict, Reason: e.Reason, Time: h.Time})
			r.ApprovalsNeeded = e.Needed
		}
	case *events.AccessRequestUpdate:
		if r, ok := s.reqs[e.RequestID]; ok {
			r.State, r.Updated, r.UpdatedBy, r.UpdateReason = e.State, h.Time, h.User, e.Reason
		}
	}
}

func (s *Service) waitFor(ctx context.Context, seq uint64) error {
	s.mu.Lock()
	if s.seq >= seq {
		s.mu.Unlock()
		return nil
	}
	if s.closed {
		s.mu.Unlock()
		return state.ErrClosed
	}
	ch := make(chan struct{})
	s.waiters = append(s.waiters, waiter{seq: seq, ch: ch})
	s.mu.Unlock()
	select {
	case <-ch:
		s.mu.RLock()
		defer s.mu.RUnlock()
		if s.seq < seq {
			return state.ErrClosed
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Changed returns a channel closed at the next change of any request.
func (s *Service) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.updateCh
}

// List returns the requests, oldest first, with the policy-derived fields
// filled in.
func (s *Service) List() []Request {
	s.mu.RLock()
	out := make([]Request, 0, len(s.reqs))
	for _, r := range s.reqs {
		out = append(out, r.clone())
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	for i := range out {
		s.fill(&out[i])
	}
	return out
}

// Get returns one request.
func (s *Service) Get(id string) (Request, bool) {
	s.mu.RLock()
	r, ok := s.reqs[id]
	var c Request
	if ok {
		c = r.clone()
	}
	s.mu.RUnlock()
	if ok {
		s.fill(&c)
	}
	return c, ok
}

// fill derives the pending deadline and, before any review, the approvals
// needed from the requester's roles as they are now.
func (s *Service) fill(r *Request) {
	p := s.policy(r.Requester)
	if r.ApprovalsNeeded == 0 {
		r.ApprovalsNeeded = p.Approvals
	}
	if r.State == state.RequestPending {
		r.PendingUntil = r.Created.Add(p.PendingTTL)
		if r.PendingUntil.After(r.Expires) {
			r.PendingUntil = r.Expires
		}
	}
}

// policy is the request policy of a user's own roles (not roles granted by
// requests: a grant never lets one ask for more).
func (s *Service) policy(user string) access.RequestPolicy {
	u, _ := s.store.User(user)
	roles, _ := s.store.ResolveRoles(u.Roles)
	return access.RequestPolicyOf(roles)
}

// CreateRequest is what Create needs.
type CreateRequest struct {
	Roles  []string
	Reason string
	// Duration is how long the access should last; 0 means the longest
	// the requester's roles allow.
	Duration time.Duration
}

// Create stores a pending request by caller for roles.
func (s *Service) Create(ctx context.Context, caller identity.Identity, cr CreateRequest) (Request, error) {
	u, ok := s.store.User(caller.User)
	if !ok {
		return Request{}, fmt.Errorf("access request: %q is not a Tollgate user (identity files cannot request access): %w", caller.User, state.ErrNotFound)
	}
	if len(cr.Roles) == 0 {
		return Request{}, fmt.Errorf("%w: access request: name at least one role (--roles)", state.ErrInvalid)
	}
	own, _ := s.store.ResolveRoles(u.Roles)
	id := identity.Identity{User: u.Name, Roles: u.Roles, Traits: u.Traits}
	var roles []string
	for _, r := range cr.Roles {
		r = strings.TrimSpace(r)
		if r == "" || slices.Contains(roles, r) {
			continue
		}
		if _, ok := s.store.Role(r); !ok {
			return Request{}, fmt.Errorf("access request: role %q: %w", r, state.ErrNotFound)
		}
		if slices.Contains(u.Roles, r) {
			return Request{}, fmt.Errorf("%w: access request: %s already holds role %q", state.ErrInvalid, u.Name, r)
		}
		if !access.CanRequest(id, own, r) {
			return Request{}, fmt.Errorf("%w: access request: none of %s's roles (%s) allows requesting role %q (allow.request.roles)",
				ErrForbidden, u.Name, strings.Join(u.Roles, ", "), r)
		}
		roles = append(roles, r)
	}
	p := access.RequestPolicyOf(own)
	reason := strings.TrimSpace(cr.Reason)
	if p.ReasonRequired && reason == "" {
		return Request{}, fmt.Errorf("%w: access request: a reason is required by %s's roles (--reason)", state.ErrInvalid, u.Name)
	}
	if len(reason) > 1024 {
		return Request{}, fmt.Errorf("%w: access request: the reason is %d bytes, at most 1024", state.ErrInvalid, len(reason))
	}
	d := cr.Duration
	switch {
	case d < 0:
		return Request{}, fmt.Errorf("%w: access request: duration %s is negative", state.ErrInvalid, d)
	case d == 0:
		d = p.MaxDuration
	case d > p.MaxDuration:
		return Request{}, fmt.Errorf("%w: access request: duration %s is longer than the %s %s's roles allow (max_duration)", state.ErrInvalid, d, p.MaxDuration, u.Name)
	}
	rid := events.NewID()
	// Whole seconds, as certificates count time: a certificate issued for
	// the grant then ends exactly with it, not a fraction of a second
	// before.
	ev := &events.AccessRequestCreate{RequestID: rid, Requester: u.Name, RequestRoles: roles, Reason: reason,
		Expires: s.now().Add(d).UTC().Truncate(time.Second)}
	if err := s.append(ctx, state.Actor{User: caller.User, Roles: caller.Roles}, rid, func(*Request) (events.Event, error) {
		return ev, nil
	}); err != nil {
		return Request{}, err
	}
	r, _ := s.Get(rid)
	return r, nil
}

// Review records caller's verdict on a pending request, then decides it
// when the verdicts reach a threshold: one denial denies, the approvals
// the requester's roles need approve.
func (s *Service) Review(ctx context.Context, caller identity.Identity, id, verdict, reason string) (Request, error) {
	if verdict != events.ReviewApprove && verdict != events.ReviewDeny {
		return Request{}, fmt.Errorf("%w: review: verdict %q (want approve or deny)", state.ErrInvalid, verdict)
	}
	reason = strings.TrimSpace(reason)
	if len(reason) > 1024 {
		return Request{}, fmt.Errorf("%w: review: the reason is %d bytes, at most 1024", state.ErrInvalid, len(reason))
	}
	if err := s.expireOne(ctx, id); err != nil && !errors.Is(err, errNothing) {
		return Request{}, err
	}
	callerRoles, _ := s.store.ResolveRoles(caller.Roles)
	editor := slices.Contains(caller.Roles, access.RoleEditor)
	by := state.Actor{User: caller.User, Roles: caller.Roles}
	var needed int
	err := s.append(ctx, by, id, func(r *Request) (events.Event, error) {
		if r == nil {
			return nil, fmt.Errorf("access request %s: %w", id, state.ErrNotFound)
		}
		if r.State != state.RequestPending {
			return nil, fmt.Errorf("%w: access request %s is already %s", state.ErrInvalid, id, r.State)
		}
		if r.Requester == caller.User {
			return nil, fmt.Errorf("%w: %s cannot review their own access request %s", ErrForbidden, caller.User, id)
		}
		for _, v := range r.Reviews {
			if v.Reviewer == caller.User {
				return nil, fmt.Errorf("%w: %s already reviewed access request %s (%s)", state.ErrInvalid, caller.User, id, v.Verdict)
			}
		}
		if !editor {
			for _, role := range r.Roles {
				if !access.CanReview(caller, callerRoles, role) {
					return nil, fmt.Errorf("%w: none of %s's roles (%s) allows reviewing requests for role %q (allow.review_requests.roles)",
						ErrForbidden, caller.User, strings.Join(caller.Roles, ", "), role)
				}
			}
		}
		a, d := r.Counts()
		if verdict == events.ReviewApprove {
			a++
		} else {
			d++
		}
		needed = r.ApprovalsNeeded
		if needed == 0 {
			needed = s.policy(r.Requester).Approvals
		}
		return &events.AccessRequestReview{RequestID: id, Verdict: verdict, Reason: reason, Approvals: a, Denials: d, Needed: needed}, nil
	})
	if err != nil {
		return Request{}, err
	}
	if err := s.decide(ctx, by, id); err != nil {
		return Request{}, err
	}
	r, _ := s.Get(id)
	return r, nil
}

// decide moves a pending request whose verdicts reached a threshold to
// approved or denied. It is also run by the sweep, so a broker that
// stopped between a review and the decision finishes it.
func (s *Service) decide(ctx context.Context, by state.Actor, id string) error {
	err := s.append(ctx, by, id, func(r *Request) (events.Event, error) {
		if r == nil || r.State != state.RequestPending || len(r.Reviews) == 0 {
			return nil, errNothing
		}
		a, d := r.Counts()
		last := r.Reviews[len(r.Reviews)-1]
		switch {
		case d > 0:
			return &events.AccessRequestUpdate{RequestID: id, State: state.RequestDenied, Reason: denyReason(r)}, nil
		case a >= max(r.ApprovalsNeeded, 1):
			return &events.AccessRequestUpdate{RequestID: id, State: state.RequestApproved, Reason: last.Reason}, nil
		}
		return nil, errNothing
	})
	if errors.Is(err, errNothing) {
		return nil
	}
	return err
}

func denyReason(r *Request) string {
	for _, v := range r.Reviews {
		if v.Verdict == events.ReviewDeny {
			if v.Reason == "" {
				return "denied by " + v.Reviewer
			}
			return v.Reason
		}
	}
	return ""
}

// errNothing stops an append that has nothing to write.
var errNothing = errors.New("nothing to change")

// expireOne expires request id if its time is up: a pending request past
// its pending deadline or its end, an approved one past its end.
func (s *Service) expireOne(ctx context.Context, id string) error {
	now := s.now()
	return s.append(ctx, s.actor, id, func(r *Request) (events.Event, error) {
		if r == nil {
			return nil, errNothing
		}
		c := r.clone()
		s.fill(&c)
		switch {
		case c.State == state.RequestPending && !now.Before(c.PendingUntil):
			return &events.AccessRequestUpdate{RequestID: id, State: state.RequestExpired,
				Reason: fmt.Sprintf("not approved within %s", c.PendingUntil.Sub(c.Created).Round(time.Second))}, nil
		case c.State == state.RequestApproved && !now.Before(c.Expires):
			return &events.AccessRequestUpdate{RequestID: id, State: state.RequestExpired,
				Reason: "the access granted ended at " + c.Expires.UTC().Format(time.RFC3339)}, nil
		}
		return nil, errNothing
	})
}

// Sweep expires every request whose time is up and decides requests left
// undecided. It returns the ids it changed.
func (s *Service) Sweep(ctx context.Context) ([]string, error) {
	var changed []string
	var errs []error
	for _, r := range s.List() {
		if r.State != state.RequestPending && r.State != state.RequestApproved {
			continue
		}
		before := r.State
		if err := s.expireOne(ctx, r.ID); err != nil && !errors.Is(err, errNothing) {
			errs = append(errs, err)
			continue
		}
		if err := s.decide(ctx, s.actor, r.ID); err != nil {
			errs = append(errs, err)
		}
		if now, ok := s.Get(r.ID); ok && now.State != before {
			changed = append(changed, r.ID)
		}
	}
	return changed, errors.Join(errs...)
}

// Run sweeps until ctx ends: expiry is an event the broker writes on
// time, not a computation every reader repeats.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("access requests: sweep", "err", err)
			}
		}
	}
}

// Grant is what approved requests give a certificate.
type Grant struct {
	// Roles are the requested roles of every request, in order.
	Roles []string
	// RequestIDs are the requests used.
	RequestIDs []string
	// Until is the earliest end of the requests' grants.
	Until time.Time
}

// Grant checks that every request in ids is caller's, approved and not
// over, and returns what they grant together.
func (s *Service) Grant(caller string, ids []string) (Grant, error) {
	if len(ids) == 0 {
		return Grant{}, fmt.Errorf("%w: no access request named", state.ErrInvalid)
	}
	now := s.now()
	var g Grant
	for _, id := range ids {
		r, ok := s.Get(id)
		switch {
		case !ok:
			return Grant{}, fmt.Errorf("access request %s: %w", id, state.ErrNotFound)
		case r.Requester != caller:
			return Grant{}, fmt.Errorf("%w: access request %s is %s's, not %s's", ErrForbidden, id, r.Requester, caller)
		case r.State != state.RequestApproved:
			return Grant{}, fmt.Errorf("%w: access request %s is %s, not approved", ErrForbidden, id, r.State)
		case !now.Before(r.Expires):
			return Grant{}, fmt.Errorf("%w: the access of request %s ended at %s", ErrForbidden, id, r.Expires.UTC().Format(time.RFC3339))
		}
		if slices.Contains(g.RequestIDs, id) {
			continue
		}
		g.RequestIDs = append(g.RequestIDs, id)
		for _, role := range r.Roles {
			if !slices.Contains(g.Roles, role) {
				g.Roles = append(g.Roles, role)
			}
		}
		if g.Until.IsZero() || r.Expires.Before(g.Until) {
			g.Until = r.Expires
		}
	}
	return g, nil
}

// Wait blocks until request id leaves pending and returns it.
func (s *Service) Wait(ctx context.Context, id string) (Request, error) {
	for {
		ch := s.Changed()
		r, ok := s.Get(id)
		if !ok {
			return Request{}, fmt.Errorf("access request %s: %w", id, state.ErrNotFound)
		}
		if r.State != state.RequestPending {
			return r, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return r, ctx.Err()
		}
	}
}

// maxAttempts bounds how often an append retries after losing a race.
const maxAttempts = 10

// append validates with build against the request's current state (nil
// when it does not exist) and appends the event build returns, expecting
// the subject's last sequence to be the one build saw; on a lost race it
// catches up and tries again. It returns once the event is applied here.
func (s *Service) append(ctx context.Context, by state.Actor, id string, build func(r *Request) (events.Event, error)) error {
	if err := events.ValidToken(id); err != nil {
		return fmt.Errorf("%w: access request id: %v", state.ErrInvalid, err)
	}
	subj := events.StateSubject(state.AggAccessRequest, id)
	s.mu.RLock()
	_, known := s.reqs[id]
	s.mu.RUnlock()
	if !known {
		// Another broker may have created it a moment ago: catch up with
		// the subject before saying it does not exist.
		if err := s.catchUp(ctx, subj); err != nil {
			return err
		}
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		s.mu.RLock()
		var cur *Request
		if r, ok := s.reqs[id]; ok {
			c := r.clone()
			cur = &c
		}
		expected := s.subjSeq[subj]
		s.mu.RUnlock()
		ev, err := build(cur)
		if err != nil {
			return err
		}
		h := ev.Header()
		h.User, h.Roles = by.User, by.Roles
		if err := events.Stamp(ev, s.cluster); err != nil {
			return err
		}
		data, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		ack, err := s.js.Publish(ctx, subj, data, jetstream.WithMsgID(h.ID),
			jetstream.WithExpectStream(events.StateStream), jetstream.WithExpectLastSequencePerSubject(expected))
		if isConflict(err) {
			if err := s.catchUp(ctx, subj); err != nil {
				return err
			}
			jitter := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 6)))
			select {
			case <-time.After(jitter):
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("requests: append %s to %s: %w", h.Type, subj, err)
		}
		return s.waitFor(ctx, ack.Sequence)
	}
	return fmt.Errorf("%w (%s, %d attempts)", state.ErrConflict, subj, maxAttempts)
}

// catchUp waits until the projection applied the last message of subj,
// if there is one.
func (s *Service) catchUp(ctx context.Context, subj string) error {
	stream, err := s.js.Stream(ctx, events.StateStream)
	if err != nil {
		return err
	}
	m, err := stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("requests: read the last message of %s: %w", subj, err)
	}
	return s.waitFor(ctx, m.Sequence)
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
