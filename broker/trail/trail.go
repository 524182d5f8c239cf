// Package trail makes every change of the control plane an audit event: it
// copies each event appended to STATE, unchanged, into AUDIT as a frame of
// that one event under audit.<cluster>.frame.broker-trail, so `tollgate
// audit tail`, `audit verify` and the exporters see admin actions (who added
// a user, changed a role, approved a request, placed a lock) beside the
// sessions they concern. The frame's header names the STATE sequence of the
// original (state_seq); the frames of one run of a trail form a chain, and
// are signed when the trail has a signer, like every other writer's.
//
// STATE stays the one source of truth: the copy is the same bytes with the
// same event id, written by a follower of STATE rather than by each command,
// so there is no second code path that could describe a change differently.
//
// Why a follower: a command that appended to STATE and then published to
// AUDIT itself would lose the audit copy if the broker died between the two,
// or if AUDIT refused it while STATE had already changed. The follower is a
// durable JetStream consumer of STATE that acknowledges an event only once
// AUDIT acknowledged its copy; an event not yet copied is delivered again
// after a failure or a restart (also to an admin command's broker when no
// daemon runs, and to the next one that starts). A copy stored but not yet
// acknowledged when the broker stopped is published again with the same
// Nats-Msg-Id (the event id), which AUDIT drops within its duplicates window;
// past it, the copy is stored twice with one id, which every reader can
// recognise.
package trail

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// Consumer is the durable consumer of STATE the copies are made from; every
// broker of a cluster shares it.
const Consumer = "broker-trail"

// Src is the writer the copies' frames name, and the last token of their
// subject.
const Src = "broker-trail"

// HeaderStateSeq names, on a copy, the STATE sequence of the original.
const HeaderStateSeq = events.HeaderStateSeq

// skipped are STATE-like events that are not changes made by anyone: none
// are stored in STATE today (heartbeats live in DB_HEARTBEATS), but should
// one be, it is not an admin action.
var skipped = map[string]bool{"db.heartbeat": true}

// Trail copies STATE into AUDIT while it runs.
type Trail struct {
	js     jetstream.JetStream
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	// signer signs the frames; nil leaves them unsigned.
	signer *events.Signer
	// runID names this run's chain of frames; fseq and prev are the next
	// frame's place in it. Only the copying goroutine uses them.
	runID string
	fseq  uint64
	prev  string

	// copied is the highest STATE sequence whose copy is acknowledged.
	copied atomic.Uint64
	mu     sync.Mutex
	wake   chan struct{} // closed and replaced whenever copied moves
}

// Option configures Start.
type Option func(*Trail)

// WithLogger sets where failures to copy are logged.
func WithLogger(l *slog.Logger) Option { return func(t *Trail) { t.log = l } }

// WithSigner signs the copies' frames with s (the host's key); without it,
// or with nil, they are unsigned.
func WithSigner(s *events.Signer) Option { return func(t *Trail) { t.signer = s } }

// Start creates (or resumes) the durable consumer and copies until Stop or
// ctx ends. The STATE and AUDIT streams must exist.
func Start(ctx context.Context, js jetstream.JetStream, opts ...Option) (*Trail, error) {
	t := &Trail{js: js, log: slog.New(slog.DiscardHandler), done: make(chan struct{}), wake: make(chan struct{})}
	for _, o := range opts {
		o(t)
	}
	t.runID = events.NewID()
	t.prev = events.FrameGenesis(t.runID)
	st, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		return nil, fmt.Errorf("trail: stream %s: %w", events.StateStream, err)
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       Consumer,
		Description:   "Tollgate broker: copies every STATE event into AUDIT",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		// One copier at a time keeps AUDIT in STATE's order even when
		// several brokers share the consumer.
		MaxAckPending: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("trail: consumer %s of %s: %w", Consumer, events.StateStream, err)
	}
	rctx, cancel := context.WithCancel(ctx)
	t.cancel = cancel
	go t.run(rctx, cons)
	return t, nil
}

// Stop ends the copying and waits for it; events not yet copied are copied
// by the next trail that runs.
func (t *Trail) Stop() {
	t.cancel()
	<-t.done
}

// Copied is the highest STATE sequence this trail copied.
func (t *Trail) Copied() uint64 { return t.copied.Load() }

// Sync waits until every event stored in STATE when it is called has its
// copy in AUDIT (by this trail or, when brokers share the consumer,
// another).
func (t *Trail) Sync(ctx context.Context) error {
	st, err := t.js.Stream(ctx, events.StateStream)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	last := info.State.LastSeq
	for {
		t.mu.Lock()
		wake := t.wake
		t.mu.Unlock()
		if t.copied.Load() >= last {
			return nil
		}
		// Another broker may be the one copying: its progress shows in
		// the consumer's ack floor.
		if c, err := st.Consumer(ctx, Consumer); err == nil {
			if ci, err := c.Info(ctx); err == nil && ci.AckFloor.Stream >= last {
				return nil
			}
		}
		select {
		case <-wake:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("trail: STATE sequence %d not copied into AUDIT (at %d): %w", last, t.copied.Load(), ctx.Err())
		case <-t.done:
			return errors.New("trail: stopped")
		}
	}
}

func (t *Trail) run(ctx context.Context, cons jetstream.Consumer) {
	defer close(t.done)
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			if ctx.Err() == nil {
				t.log.Warn("reading STATE to copy into AUDIT", "err", err)
				pause(ctx, time.Second)
			}
			continue
		}
		for m := range batch.Messages() {
			t.copy(ctx, m)
		}
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) {
			t.log.Warn("reading STATE to copy into AUDIT", "err", err)
			pause(ctx, time.Second)
		}
	}
}

// copy stores m's copy in AUDIT, retrying until AUDIT takes it or ctx ends,
// then acknowledges m. Retrying here rather than asking for a redelivery
// keeps the copies in order.
func (t *Trail) copy(ctx context.Context, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		t.log.Error("STATE message without metadata; not copied", "subject", m.Subject(), "err", err)
		return
	}
	seq := md.Sequence.Stream
	out, hash, err := t.auditCopy(m.Data(), seq)
	if err != nil {
		// Not an event (nothing the broker writes): nothing to copy, and
		// retrying would not change that.
		t.log.Error("STATE message is not an event; not copied into AUDIT", "subject", m.Subject(), "seq", seq, "err", err)
	}
	for backoff := 100 * time.Millisecond; out != nil; backoff = min(2*backoff, 10*time.Second) {
		ack, err := t.js.PublishMsg(ctx, out, jetstream.WithExpectStream(events.AuditStream))
		if err == nil {
			t.chained(ctx, ack, out.Data, hash)
			break
		}
		if ctx.Err() != nil {
			return // delivered again to the next trail
		}
		t.log.Error("copying a STATE event into AUDIT failed; retrying", "subject", m.Subject(), "seq", seq, "err", err)
		// Keep the message ours while retrying.
		_ = m.InProgress()
		if !pause(ctx, backoff) {
			return
		}
	}
	for {
		err := m.DoubleAck(ctx)
		if err == nil || ctx.Err() != nil {
			break
		}
		// Unacknowledged, it would be copied again (and deduplicated); ask
		// again rather than move on with it outstanding.
		t.log.Warn("acknowledging a copied STATE event", "seq", seq, "err", err)
		if !pause(ctx, time.Second) {
			return
		}
	}
	t.copied.Store(seq)
	t.mu.Lock()
	close(t.wake)
	t.wake = make(chan struct{})
	t.mu.Unlock()
}

// auditCopy is the AUDIT message for one STATE event, a frame of that
// event at the next place of this run's chain, and the frame's hash; nil for
// events that are no admin action.
func (t *Trail) auditCopy(data []byte, seq uint64) (*nats.Msg, string, error) {
	var h struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Cluster string `json:"cluster"`
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, "", err
	}
	if h.ID == "" || h.Type == "" || h.Cluster == "" {
		return nil, "", fmt.Errorf("no id, type or cluster")
	}
	if err := events.ValidToken(h.Cluster); err != nil {
		return nil, "", err
	}
	if skipped[h.Type] {
		return nil, "", nil
	}
	if _, ok := events.Lookup(h.Type); !ok {
		return nil, "", fmt.Errorf("unknown event type %q", h.Type)
	}
	// The frame's id is the event's: AUDIT drops a copy made again (by
	// this trail after an unanswered publish, or by the next one after a
	// crash) as it did when copies were single events.
	fh := events.FrameHeader{ID: h.ID, Src: Src, Run: t.runID, FSeq: t.fseq, Prev: t.prev, StateSeq: seq}
	frame, hash, err := events.EncodeFrame(nil, fh, [][]byte{data}, t.signer)
	if err != nil {
		return nil, "", err
	}
	return &nats.Msg{
		Subject: "audit." + h.Cluster + "." + events.FrameSubject + "." + Src,
		Data:    frame,
		Header: nats.Header{
			jetstream.MsgIDHeader: []string{h.ID},
			HeaderStateSeq:        []string{strconv.FormatUint(seq, 10)},
		},
	}, hash, nil
}

// chained moves the chain past a frame AUDIT acknowledged, unless AUDIT
// dropped it as a duplicate of a copy made by another run: then the frame
// is not in the stream and the next one takes its place. A duplicate of
// this very frame (its first publish stored, the answer lost) is in the
// stream, so the chain moves on.
func (t *Trail) chained(ctx context.Context, ack *jetstream.PubAck, frame []byte, hash string) {
	if ack.Duplicate {
		stored, err := t.storedAt(ctx, ack.Sequence)
		if err != nil {
			// Unknown: moving on keeps fseq unique; at worst the run's
			// chain shows a frame missing where a copy was dropped.
			t.log.Warn("reading the copy AUDIT already held", "seq", ack.Sequence, "err", err)
		} else if !bytes.Equal(stored, frame) {
			return
		}
	}
	t.fseq++
	t.prev = hash
}

// storedAt is the data of AUDIT's message at seq.
func (t *Trail) storedAt(ctx context.Context, seq uint64) ([]byte, error) {
	st, err := t.js.Stream(ctx, events.AuditStream)
	if err != nil {
		return nil, err
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
