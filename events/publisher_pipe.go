package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// ackPipe sends messages to JetStream pipelined on core NATS and matches
// each acknowledgement to its message by a sequence number in the reply
// subject. It does what jetstream.PublishMsgAsync does without a future,
// channels, a timer and a JSON decode per message: about 15 fewer
// allocations and 15% less CPU per event, server included
// (BenchmarkBatch16Transport). It also owns each message until it is
// resolved, which PublishMsgAsync does not promise: the library may resend
// a message on "no responders" after its caller gave up on it, so a pooled
// buffer could not be reused safely.
//
// Every message sent successfully is resolved exactly once, through
// resolve: with its acknowledgement, with the error JetStream answered, or
// with errNoAck when nothing came within the ack timeout.
type ackPipe struct {
	nc      *nats.Conn
	prefix  string
	sub     *nats.Subscription
	timeout time.Duration
	epoch   time.Time
	resolve func(m *outMsg, dup bool, err error)

	mu       sync.Mutex
	next     uint64
	inflight map[uint64]*outMsg
	// fifo holds sent messages in send order, hence deadline order, so
	// the reaper finds the expired ones at its head. Acknowledged entries
	// leave the map at once and the fifo when the reaper reaches them.
	fifo []fifoEntry
	head int

	stop chan struct{}
	done chan struct{}
}

type fifoEntry struct {
	seq      uint64
	deadline time.Duration // since epoch
}

// errNoAck is the cause when no acknowledgement came within the timeout.
var errNoAck = errors.New("no acknowledgement from JetStream")

// errNoStream is the cause when no stream listens on the subject.
var errNoStream = errors.New("no stream answered")

func newAckPipe(nc *nats.Conn, timeout time.Duration, resolve func(*outMsg, bool, error)) (*ackPipe, error) {
	p := &ackPipe{
		nc:       nc,
		prefix:   nc.NewInbox() + ".",
		timeout:  timeout,
		epoch:    time.Now(),
		resolve:  resolve,
		inflight: map[uint64]*outMsg{},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	sub, err := nc.Subscribe(p.prefix+"*", p.onReply)
	if err != nil {
		return nil, fmt.Errorf("subscribe to acknowledgements: %w", err)
	}
	// Acknowledgements are small and bounded by what is in flight; a slow
	// consumer dropping them would only turn stored events into retries.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	p.sub = sub
	go p.reap()
	return p, nil
}

func (p *ackPipe) now() time.Duration { return time.Since(p.epoch) }

// send publishes m with a reply subject that names it. When send returns an
// error, m was not sent and will not be resolved.
func (p *ackPipe) send(m *outMsg) error {
	p.mu.Lock()
	seq := p.next
	p.next++
	// While PublishMsg reads m (it may block on a slow socket), the reaper
	// must not resolve it, and so let it be reused, however late it is.
	m.sending.Store(seq + 1)
	p.inflight[seq] = m
	p.fifo = append(p.fifo, fifoEntry{seq: seq, deadline: p.now() + p.timeout})
	p.mu.Unlock()

	var b [64]byte
	reply := strconv.AppendUint(append(b[:0], p.prefix...), seq, 36)
	m.msg.Reply = string(reply)
	err := p.nc.PublishMsg(&m.msg)
	if err != nil {
		p.mu.Lock()
		delete(p.inflight, seq)
		p.mu.Unlock()
	}
	// Only this send's mark is cleared: once sent, m may already have been
	// acknowledged, reused and be in its next send.
	m.sending.CompareAndSwap(seq+1, 0)
	return err
}

// onReply runs on the subscription's goroutine for every acknowledgement.
func (p *ackPipe) onReply(r *nats.Msg) {
	seq, err := strconv.ParseUint(r.Subject[len(p.prefix):], 36, 64)
	if err != nil {
		return
	}
	p.mu.Lock()
	m, ok := p.inflight[seq]
	delete(p.inflight, seq)
	p.mu.Unlock()
	if !ok {
		return // resolved already: timed out, and its retry will be deduplicated
	}
	dup, err := parseAck(r)
	p.resolve(m, dup, err)
}

// reap resolves messages whose acknowledgement is overdue.
func (p *ackPipe) reap() {
	defer close(p.done)
	tick := min(max(p.timeout/10, time.Millisecond), 50*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var expired []*outMsg
	for {
		select {
		case <-t.C:
		case <-p.stop:
			return
		}
		now := p.now()
		p.mu.Lock()
		for p.head < len(p.fifo) {
			e := p.fifo[p.head]
			m, ok := p.inflight[e.seq]
			if ok && (e.deadline > now || m.sending.Load() == e.seq+1) {
				break
			}
			if ok {
				delete(p.inflight, e.seq)
				expired = append(expired, m)
			}
			p.head++
		}
		if p.head > 1024 && p.head > len(p.fifo)/2 {
			n := copy(p.fifo, p.fifo[p.head:])
			p.fifo = p.fifo[:n]
			p.head = 0
		}
		p.mu.Unlock()
		for i, m := range expired {
			p.resolve(m, false, errNoAck)
			expired[i] = nil
		}
		expired = expired[:0]
	}
}

// close stops the reaper and the subscription; messages still in flight
// are resolved with errNoAck.
func (p *ackPipe) close() {
	close(p.stop)
	<-p.done
	_ = p.sub.Unsubscribe()
	p.mu.Lock()
	left := make([]*outMsg, 0, len(p.inflight))
	for seq, m := range p.inflight {
		if m.sending.Load() == seq+1 {
			continue // its sender's own timeout covers it
		}
		left = append(left, m)
		delete(p.inflight, seq)
	}
	p.mu.Unlock()
	for _, m := range left {
		p.resolve(m, false, errNoAck)
	}
}

var (
	ackPrefix    = []byte(`{"stream":`)
	ackError     = []byte(`"error"`)
	ackDuplicate = []byte(`"duplicate"`)
)

// parseAck reads a JetStream publish acknowledgement. The server writes a
// success as {"stream":"AUDIT","seq":N} with ,"duplicate": true when the id
// was stored before; anything else is decoded in full.
func parseAck(r *nats.Msg) (dup bool, err error) {
	d := r.Data
	if len(d) == 0 {
		if r.Header.Get("Status") == "503" {
			return false, errNoStream
		}
		return false, fmt.Errorf("empty acknowledgement (status %q %q)", r.Header.Get("Status"), r.Header.Get("Description"))
	}
	if bytes.HasPrefix(d, ackPrefix) && !bytes.Contains(d, ackError) {
		return bytes.Contains(d, ackDuplicate), nil
	}
	var a struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Stream    string `json:"stream"`
		Duplicate bool   `json:"duplicate"`
	}
	if err := json.Unmarshal(d, &a); err != nil {
		return false, fmt.Errorf("acknowledgement is not JSON: %q", d)
	}
	if a.Error != nil {
		return false, &jsError{code: a.Error.Code, errCode: a.Error.ErrCode, desc: a.Error.Description}
	}
	if a.Stream == "" {
		return false, fmt.Errorf("acknowledgement names no stream: %q", d)
	}
	return a.Duplicate, nil
}

// jsError is an error JetStream answered to a publish.
type jsError struct {
	code, errCode int
	desc          string
}

func (e *jsError) Error() string {
	return fmt.Sprintf("JetStream refused the event: %s (code %d, err_code %d)", e.desc, e.code, e.errCode)
}
