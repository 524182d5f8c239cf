package events

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// typeSessionEnd is the event a session's chain ends with: the publisher
// seals it.
const typeSessionEnd = "db.session.end"

// Retry backoff of a frame JetStream did not store.
const (
	retryMin = 5 * time.Millisecond
	retryMax = time.Second
)

// accept stamps and encodes ev, chains it to its session and adds it to
// the open frame. The session's chain lock is held until the event is in
// the open frame, so the events of a session are in their chain's order.
// The caller has reserved room for it.
func (p *Publisher) accept(ctx context.Context, ev Event, w *waiter) error {
	if v := reflect.ValueOf(ev); !v.IsValid() || v.Kind() == reflect.Pointer && v.IsNil() {
		return errors.New("events: publish: nil event")
	}
	if err := Stamp(ev, p.cluster); err != nil {
		return err
	}
	h := ev.Header()
	var (
		sid string
		ch  *chain
		sh  *Session
	)
	if se, ok := ev.(SessionEvent); ok && se.SessionHeader().SID != "" {
		sh = se.SessionHeader()
		sid = sh.SID
		c, ok := p.chains.Load(sid)
		if !ok {
			c, _ = p.chains.LoadOrStore(sid, &chain{})
		}
		ch = c.(*chain)
		ch.mu.Lock()
		defer ch.mu.Unlock()
		if ch.last == "" {
			ch.last = ChainGenesis(sid)
		}
		sh.Prev, sh.Signer, sh.Seal = ch.last, "", ""
	}
	buf := p.bufs.Get().(*[]byte)
	data, err := p.encode(ctx, ev, (*buf)[:0])
	if err != nil {
		p.bufs.Put(buf)
		return err
	}
	if sh != nil {
		if s := p.signer.Load(); s != nil && h.Type == typeSessionEnd {
			if data, err = seal(data, s); err != nil {
				p.bufs.Put(buf)
				return err
			}
			ch.last = EventHash(data)
		} else {
			ch.last = Hash(data)
		}
		if h.Type == typeSessionEnd {
			p.chains.Delete(sid)
		}
	}
	*buf = data
	p.mu.Lock()
	p.open = append(p.open, pending{data: data, buf: buf, sid: sid, time: h.Time, w: w, ends: sh != nil && h.Type == typeSessionEnd})
	if w != nil {
		// Counted per event here, per frame when cut: the writer turns
		// the event counts of a frame into one count.
		w.left.Add(1)
	}
	p.mu.Unlock()
	p.pump()
	return nil
}

// EndChain forgets the chain of a session that closed without its end
// event (refused before it began): its hash would otherwise be kept for the
// life of the process. A later event of the session starts a new chain
// from its genesis, which verify reports.
func (p *Publisher) EndChain(sid string) { p.chains.Delete(sid) }

// seal appends the signer and, last, the seal to an encoded event: the
// signature covers the event with its signer and without its seal.
func seal(data []byte, s *Signer) ([]byte, error) {
	data = append(data[:len(data)-1], `,"signer":"`...)
	data = append(data, s.certB64...)
	data = append(data, `"}`...)
	sig, err := s.Sign(data)
	if err != nil {
		return nil, err
	}
	data = append(data[:len(data)-1], sealKey...)
	data = append(data, sig...)
	return append(data, `"}`...), nil
}

func (p *Publisher) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// pump cuts and sends frames while events are open and a frame may be
// sent, on the caller's goroutine: the goroutine that accepted an event,
// or the one that learnt of an acknowledgement. Sending from where the
// event or the ack already is saves a hand-off to a writer goroutine on
// every frame. One goroutine cuts at a time, so frames leave in the order
// of their fseq; a caller that finds another cutting leaves its events to
// it, and the cutter looks again before it lets go.
func (p *Publisher) pump() {
	for p.ready() {
		if !p.cutMu.TryLock() {
			// The goroutine cutting looks at open again after it unlocks;
			// the writer goroutine is the backstop should it not.
			p.wake()
			return
		}
		var failed *outMsg
		var err error
		for failed == nil && p.ready() {
			m := p.cut(false)
			p.published.Add(1)
			if err = p.pipe.send(m); err != nil {
				failed = m
			}
		}
		p.cutMu.Unlock()
		if failed != nil {
			p.onResolved(failed, false, err)
			return
		}
	}
}

// ready reports whether a frame can be cut now.
func (p *Publisher) ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.open) > 0 && p.inflight < framesInFlight && p.fault.Load() == nil
}

// write is the writer goroutine. Frames are cut by pump where events and
// acknowledgements arrive; this goroutine only cuts when woken by a caller
// that found another one cutting (the backstop of a lost race) or when a
// fault clears, and it signs the tail: a run whose last frame went out
// unsigned gets a signed frame without events (a checkpoint) once the
// writer has been idle for signEvery, so a run never ends unproven for
// longer than that.
func (p *Publisher) write() {
	defer close(p.stopped)
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	for {
		var timeout <-chan time.Time
		p.cutMu.Lock()
		p.mu.Lock()
		can := p.inflight < framesInFlight && p.fault.Load() == nil && len(p.open) == 0
		p.mu.Unlock()
		if can && p.tailUnsigned && p.signer.Load() != nil {
			idle.Reset(max(signEvery-time.Since(p.lastSigned), 0))
			timeout = idle.C
		}
		p.cutMu.Unlock()
		select {
		case <-p.kick:
			idle.Stop()
			p.pump()
		case <-timeout:
			p.checkpoint()
		case <-p.stop:
			idle.Stop()
			p.abandon()
			return
		}
	}
}

// checkpoint signs the run's unsigned tail with a frame without events,
// unless events came meanwhile (their frame is signed when due).
func (p *Publisher) checkpoint() {
	p.cutMu.Lock()
	p.mu.Lock()
	can := p.inflight < framesInFlight && p.fault.Load() == nil && len(p.open) == 0
	p.mu.Unlock()
	if !can || !p.tailUnsigned || p.signer.Load() == nil {
		p.cutMu.Unlock()
		p.pump()
		return
	}
	m := p.cut(true)
	p.published.Add(1)
	err := p.pipe.send(m)
	p.cutMu.Unlock()
	if err != nil {
		p.onResolved(m, false, err)
	}
}

// signEvery is how often, at most, a run's frames are signed under load
// (and a session's end always is). Each frame names the hash of the one
// before it, so a signed frame proves every frame of its run up to it; a
// signature per frame would cost an ECDSA signature (about 25 µs of CPU)
// for every few statements.
const signEvery = 20 * time.Millisecond

// cut takes the open events that fit into one message and builds their
// frame; sign forces a signature (a checkpoint holds no events).
func (p *Publisher) cut(sign bool) *outMsg {
	s := p.signer.Load()
	limit := p.maxMsg - frameReserve - len(p.subject)
	if s != nil {
		limit -= len(s.certB64)
	}
	m := p.msgs.Get().(*outMsg)
	p.mu.Lock()
	n, size := 0, 0
	for n < len(p.open) {
		e := &p.open[n]
		add := len(e.data) + 1
		if e.sid != "" {
			add += len(e.sid) + 3 // in the header's sids, at most once
		}
		if n > 0 && size+add > limit {
			break
		}
		size += add
		n++
	}
	taken := p.open[:n]
	rest := p.open[n:]
	p.open = append(p.spare[:0], rest...)
	p.spare = nil
	for i := range taken {
		if w := taken[i].w; w != nil {
			if len(m.waiters) == 0 || m.waiters[len(m.waiters)-1] != w {
				m.waiters = append(m.waiters, w)
				w.left.Add(1)
			}
			w.left.Add(-1)
		}
	}
	p.inflight++
	p.mu.Unlock()

	h := FrameHeader{Version: FrameVersion, ID: NewID(), Src: p.src, Run: p.run, FSeq: p.fseq, Prev: p.prev, N: n}
	evs := make([][]byte, n)
	for i := range taken {
		e := &taken[i]
		evs[i] = e.data
		sign = sign || e.ends
		if h.First.IsZero() || e.time.Before(h.First) {
			h.First = e.time
		}
		if e.time.After(h.Last) {
			h.Last = e.time
		}
		if e.sid != "" && !containsLast(h.SIDs, e.sid) {
			h.SIDs = append(h.SIDs, e.sid)
		}
	}
	if n == 0 {
		h.First = time.Now().UTC()
		h.Last = h.First
	}
	if s != nil && !sign && time.Since(p.lastSigned) < signEvery {
		s = nil
	}
	data, hash, err := appendFrame(m.msg.Data[:0], &h, evs, s)
	if err != nil {
		// Only a signer failing (an HSM away) gets here: store the frame
		// unsigned rather than not at all; verify reports it.
		p.log.Error("audit frame not signed", "frame", h.ID, "error", err)
		s = nil
		data, hash, _ = appendFrame(m.msg.Data[:0], &h, evs, nil)
	}
	if s != nil {
		p.lastSigned = time.Now()
	} else if !p.tailUnsigned && p.signer.Load() != nil {
		// The writer goroutine arms the checkpoint.
		defer p.wake()
	}
	p.tailUnsigned = s == nil
	for i := range taken {
		p.bufs.Put(taken[i].buf)
		taken[i] = pending{}
	}
	p.mu.Lock()
	if p.spare == nil {
		p.spare = taken[:0]
	}
	p.mu.Unlock()
	p.fseq++
	p.prev = hash
	m.id, m.hdrID[0], m.n = h.ID, h.ID, n
	m.msg.Subject = p.subject
	m.msg.Data = data
	return m
}

// containsLast reports whether sid is among the last few of sids: a frame
// holds each session's events mostly together, and a rare repeat only
// lists a session twice.
func containsLast(sids []string, sid string) bool {
	for i := len(sids) - 1; i >= 0 && i >= len(sids)-8; i-- {
		if sids[i] == sid {
			return true
		}
	}
	return false
}

// onResolved learns the fate of every frame the pipe sent. A frame that
// was not stored is sent again, the same bytes with the same id, until it
// is: its events were accepted and strict callers that gave up were told
// they are held.
func (p *Publisher) onResolved(m *outMsg, dup bool, err error) {
	if err != nil {
		p.lastErr.Store(&err)
		for _, w := range m.waiters {
			w.setCause(err)
		}
		select {
		case <-p.stop:
			p.log.Error("audit frame not stored before close", "frame", m.id, "events", m.n, "error", err)
			p.mu.Lock()
			p.inflight--
			p.mu.Unlock()
			return
		default:
		}
		p.warn("audit frame not stored, retrying", "frame", m.id, "events", m.n, "error", err)
		wait := min(retryMin<<min(m.tries, 10), retryMax)
		m.tries++
		time.AfterFunc(wait, func() {
			p.retried.Add(1)
			p.published.Add(1)
			if err := p.pipe.send(m); err != nil {
				p.onResolved(m, false, err)
			}
		})
		return
	}
	p.lastErr.Store(nil)
	p.acked.Add(uint64(m.n))
	p.frames.Add(1)
	if dup {
		p.duplicates.Add(1)
	}
	for i, w := range m.waiters {
		w.resolve()
		m.waiters[i] = nil
	}
	n := m.n
	p.recycle(m)
	p.mu.Lock()
	p.inflight--
	p.mu.Unlock()
	p.release(n)
	p.pump()
}

func (p *Publisher) recycle(m *outMsg) {
	if cap(m.msg.Data) > recycleLimit {
		m.msg.Data = nil
	}
	m.msg.Data = m.msg.Data[:0]
	m.msg.Reply = ""
	m.id, m.hdrID[0], m.n, m.tries = "", "", 0, 0
	m.waiters = m.waiters[:0]
	p.msgs.Put(m)
}

// abandon logs the events Close gave up on before they were in a frame.
func (p *Publisher) abandon() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.open) > 0 {
		p.log.Error("audit events not stored before close", "events", len(p.open))
	}
}

// publishSolo stores ev alone in a frame of its own run, waiting for the
// acknowledgement and resending until the ack timeout. An event whose id
// the caller chose keeps it as the frame's Nats-Msg-Id, so a report sent
// again after a crash is stored once.
func (p *Publisher) publishSolo(ctx context.Context, ev Event) error {
	if v := reflect.ValueOf(ev); !v.IsValid() || v.Kind() == reflect.Pointer && v.IsNil() {
		return errors.New("events: publish: nil event")
	}
	chosen := ev.Header().ID
	if err := Stamp(ev, p.cluster); err != nil {
		return err
	}
	h := ev.Header()
	data, err := p.encode(ctx, ev, nil)
	if err != nil {
		return err
	}
	run := NewID()
	fid := run
	if chosen != "" {
		fid = chosen
	}
	fh := FrameHeader{Version: FrameVersion, ID: fid, Src: p.src, Run: run, Prev: FrameGenesis(run), N: 1, First: h.Time, Last: h.Time}
	frame, _, err := appendFrame(nil, &fh, [][]byte{data}, p.signer.Load())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.ackTimeout)
	defer cancel()
	for backoff := retryMin; ; backoff = min(2*backoff, 250*time.Millisecond) {
		msg := &nats.Msg{Subject: p.subject, Data: frame, Header: nats.Header{jetstream.MsgIDHeader: []string{fid}}}
		_, err = p.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(AuditStream))
		p.published.Add(1)
		if err == nil {
			p.acked.Add(1)
			p.frames.Add(1)
			return nil
		}
		select {
		case <-ctx.Done():
			return p.unavailable(fmt.Errorf("%v (%v)", ctx.Err(), err))
		case <-time.After(backoff):
		}
	}
}
