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
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/access"
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
