package agent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// Defaults of the refusal aggregation.
const (
	// DefaultRejectWindow is how long further refusals of one source and
	// reason are counted before they are reported together.
	DefaultRejectWindow = 10 * time.Second
	// DefaultRejectSources bounds the sources tracked one by one; refusals
	// from others are counted under one overflow entry, so a flood from
	// many addresses cannot grow the agent's memory or the store.
	DefaultRejectSources = 1024
)

// rejections turns refused connections into db.session.rejected events,
// aggregated per source IP and reason: the first refusal is reported at
// once; those that follow within the window are counted and reported in
// one event when it ends, and a new window starts. A source quiet for a
// whole window is forgotten.
type rejections struct {
	window time.Duration
	max    int
	emit   func(*events.SessionRejected)

	mu      sync.Mutex
	sources map[rejectKey]*rejectWindow
	closed  bool
}

type rejectKey struct{ ip, reason string }

type rejectWindow struct {
	// pending holds the refusals counted since the window began (the
	// details of the last one), nil when there are none.
	pending *events.SessionRejected
	timer   *time.Timer
}

func newRejections(window time.Duration, maxSources int, emit func(*events.SessionRejected)) *rejections {
	if window <= 0 {
		window = DefaultRejectWindow
	}
	if maxSources <= 0 {
		maxSources = DefaultRejectSources
	}
	return &rejections{window: window, max: maxSources, emit: emit, sources: map[rejectKey]*rejectWindow{}}
}

// add records one refusal; ev holds its details (address, reason, error,
// SNI, certificate). It may call emit before returning.
func (r *rejections) add(ev *events.SessionRejected) {
	now := time.Now().UTC()
	ev.WindowNs = int64(r.window)
	key := rejectKey{ev.ClientIP, ev.Reason}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		ev.Count, ev.First, ev.Last = 1, now, now
		r.emit(ev)
		return
	}
	w, ok := r.sources[key]
	if !ok && len(r.sources) >= r.max {
		// The overflow entry is the one allowed beyond the bound.
		ev.Error = fmt.Sprintf("%s: %s (more than %d sources refused at once; counted together)", ev.Reason, ev.Error, r.max)
		ev.Reason = events.RejectOverflow
		key = rejectKey{"", events.RejectOverflow}
		w, ok = r.sources[key]
	}
	if !ok {
		r.sources[key] = &rejectWindow{timer: time.AfterFunc(r.window, func() { r.tick(key) })}
		r.mu.Unlock()
		ev.Count, ev.First, ev.Last = 1, now, now
		r.emit(ev)
		return
	}
	if w.pending == nil {
		ev.First = now
	} else {
		ev.First, ev.Count = w.pending.First, w.pending.Count
	}
	ev.Count++
	ev.Last = now
	w.pending = ev
	r.mu.Unlock()
}

// tick ends a window: its refusals are reported and a new window begins,
// or, when there were none, the source is forgotten.
func (r *rejections) tick(key rejectKey) {
	r.mu.Lock()
	w, ok := r.sources[key]
	if !ok || r.closed {
		r.mu.Unlock()
		return
	}
	ev := w.pending
	if ev == nil {
		delete(r.sources, key)
		r.mu.Unlock()
		return
	}
	w.pending = nil
	w.timer.Reset(r.window)
	r.mu.Unlock()
	r.emit(ev)
}

// close reports every refusal still counted; later ones are reported one
// by one.
func (r *rejections) close() {
	r.mu.Lock()
	var out []*events.SessionRejected
	for k, w := range r.sources {
		w.timer.Stop()
		if w.pending != nil {
			out = append(out, w.pending)
		}
		delete(r.sources, k)
	}
	r.closed = true
	r.mu.Unlock()
	for _, ev := range out {
		r.emit(ev)
	}
}

// tracked is how many sources are counted one by one (and the overflow).
func (r *rejections) tracked() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sources)
}

// rejected starts the event of a refused connection from raw.
func rejected(remote net.Addr, reason string, err error) *events.SessionRejected {
	addr := ""
	if remote != nil {
		addr = remote.String()
	}
	return RejectedFrom(addr, reason, err)
}

// RejectedFrom starts the event of a refusal by a client at addr
// (host:port), for an engine that refuses before any session (Env.Reject).
func RejectedFrom(addr, reason string, err error) *events.SessionRejected {
	ev := &events.SessionRejected{Reason: reason, ClientAddr: addr, ClientIP: addr}
	if h, _, e := net.SplitHostPort(addr); e == nil {
		ev.ClientIP = h
	}
	if err != nil {
		ev.Error = err.Error()
	}
	return ev
}

// Reject records a refusal an engine makes before any session, aggregated
// per source and reason with the server's own (db.session.rejected), so a
// flood of them makes a few events.
func (e *Env) Reject(ev *events.SessionRejected) {
	ev.Cluster = e.Cluster
	if e.rejects != nil {
		e.rejects.add(ev)
		return
	}
	ev.Count, ev.First, ev.Last = 1, time.Now().UTC(), time.Now().UTC()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e.Recorder != nil {
		_ = e.Recorder.Publish(ctx, ev)
	}
}

// peerCertificate is what a presented certificate says, trusted or not.
func peerCertificate(c *x509.Certificate) *events.PeerCertificate {
	if c == nil {
		return nil
	}
	sum := sha256.Sum256(c.Raw)
	return &events.PeerCertificate{
		Subject:     c.Subject.String(),
		Issuer:      c.Issuer.String(),
		Serial:      c.SerialNumber.Text(16),
		NotBefore:   c.NotBefore.UTC(),
		NotAfter:    c.NotAfter.UTC(),
		Fingerprint: hex.EncodeToString(sum[:]),
	}
}

// Rejections aggregates refusals made before a connection reaches an
// agent.Server (the proxy's, for a database no agent serves) the way the
// server aggregates its own: one event at once per source and reason, the
// rest of each window counted in one, a bounded number of sources.
type Rejections struct{ r *rejections }

// NewRejections returns an aggregation that hands its events to emit;
// zero window and maxSources mean DefaultRejectWindow and
// DefaultRejectSources.
func NewRejections(window time.Duration, maxSources int, emit func(*events.SessionRejected)) *Rejections {
	return &Rejections{newRejections(window, maxSources, emit)}
}

// Add records one refusal (RejectedFrom starts its event); it may call
// emit before returning.
func (r *Rejections) Add(ev *events.SessionRejected) { r.r.add(ev) }

// Close emits what is still counted; later refusals are emitted one by
// one.
func (r *Rejections) Close() { r.r.close() }
