package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// IndexConsumer is the durable consumer on AUDIT the index reads with.
const IndexConsumer = "sessions-index"

// DefaultIndexEvery is how often the index saves what it read.
const DefaultIndexEvery = 2 * time.Second

// Bounds of what the index reads between two saves.
const (
	// maxUnsaved messages read make the index save before its time: it
	// bounds the messages read again after a crash, and stays below the
	// consumer's maxAckPending so the server never stops delivering.
	maxUnsaved    = 16384
	maxAckPending = 2 * maxUnsaved
	fetchBatch    = 1024
	// idleEvict: a live session saved and quiet this long leaves memory;
	// its entry is read back if it speaks again.
	idleEvict = time.Minute
)

// IndexOptions configure StartIndex.
type IndexOptions struct {
	// Replicas of the bucket: the AUDIT stream's.
	Replicas int
	// MaxAge, when set, is the AUDIT stream's: an entry not written for
	// that long names messages the stream no longer holds.
	MaxAge time.Duration
	// Every is how often the index saves; DefaultIndexEvery when zero.
	Every time.Duration
	Log   *slog.Logger
}

// Index is the broker's session index: it reads AUDIT through a durable
// consumer and keeps, per session, its summary and the sequences of the
// messages holding its events in the SESSIONS bucket (index.go).
//
// Frames exist to make the store pay its per-message cost once for many
// events, so the index must not pay it again per frame: a session's entry
// is written at most once per save (every few seconds, or every
// maxUnsaved messages), not once per message it appears in, and the
// writes of a save go out together without waiting for each. A session
// that starts and ends between two saves is written once. Between saves,
// readers read the few messages the index has not saved (index.go), so
// they see every session as it is.
//
// A save renews the lease (lease.go), writes the sessions read since the
// last one, then the progress key, then acknowledges the consumer up to
// there. A restart, or another broker taking over, reads again from the
// progress on. An entry records the last AUDIT sequence it
// counts, so a message read again (saved before a crash, progress not) is
// not counted twice.
type Index struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	stream jetstream.Stream
	cons   jetstream.Consumer
	log    *slog.Logger
	every  time.Duration
	lease  *lease

	// known is the highest AUDIT sequence an entry in the bucket may
	// count when this broker began keeping the index: a session first met after it, with its
	// start (a session's first event, stored before any other of its
	// events), cannot have an entry yet, so none is read for it.
	known uint64
	// live are the sessions in memory: read since the last save, or
	// still live.
	live map[string]*tracked
	// read is the sequence of the last message read, last that message
	// (acknowledged at the next save), unsaved how many were read since.
	read    uint64
	last    jetstream.Msg
	unsaved int
	// delivered is the consumer sequence of the last delivery: a gap
	// means a delivery was lost, and the consumer starts again.
	delivered uint64
	ev        sessionFields
	brief     brief

	mu    sync.Mutex
	saved uint64
	// savedCh is closed at each save (and replaced), for Sync.
	savedCh chan struct{}

	cancel context.CancelFunc
	done   chan struct{}
}

// tracked is a session in the index's memory.
type tracked struct {
	indexed
	key string
	// seqs are the sequences of its messages from chunk base on: the
	// chunks before are saved and full.
	seqs  []uint64
	base  int
	dirty bool
	// cur is the message being read, so that its events after the first
	// count too.
	cur     uint64
	touched time.Time
}

// StartIndex makes the bucket and reads AUDIT in the background until ctx
// ends or Stop. Several brokers may run: one at a time keeps the index,
// the one holding the lease (lease.go); the others wait to take over.
func StartIndex(ctx context.Context, js jetstream.JetStream, o IndexOptions) (*Index, error) {
	if o.Every <= 0 {
		o.Every = DefaultIndexEvery
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      IndexBucket,
		Description: "Tollgate sessions: summary and AUDIT messages of every session",
		History:     1,
		TTL:         o.MaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("sessions: index bucket %s: %w", IndexBucket, err)
	}
	stream, err := js.Stream(ctx, events.AuditStream)
	if err != nil {
		return nil, fmt.Errorf("sessions: stream %s: %w", events.AuditStream, err)
	}
	ix := &Index{js: js, kv: kv, stream: stream, log: o.Log, every: o.Every,
		lease: newLease(kv, o.Every), savedCh: make(chan struct{}), done: make(chan struct{})}
	leading, err := ix.lease.acquire(ctx)
	if err != nil {
		return nil, err
	}
	if leading {
		if err := ix.begin(ctx); err != nil {
			ix.lease.release(ctx)
			return nil, err
		}
	}
	ctx, ix.cancel = context.WithCancel(ctx)
	go ix.run(ctx, leading)
	return ix, nil
}

// begin starts keeping the index: from the progress on, with nothing in
// memory (another broker may have kept it meanwhile).
func (ix *Index) begin(ctx context.Context) error {
	var p indexProgress
	if _, err := getJSON(ctx, ix.kv, progressKey, &p); err != nil {
		return err
	}
	ix.live, ix.read, ix.unsaved = map[string]*tracked{}, p.Seq, 0
	ix.mu.Lock()
	ix.saved = p.Seq
	ix.mu.Unlock()
	// What the bucket may count: up to what the last consumer was given;
	// without it, anything stored.
	ix.known = p.Seq
	if st, err := ix.kv.Status(ctx); err == nil && st.Values() <= 1 {
		ix.known = 0 // no entry at all (the lease is the one value)
	} else if c, err := ix.stream.Consumer(ctx, IndexConsumer); err == nil {
		ix.known = max(ix.known, c.CachedInfo().Delivered.Stream)
	} else if info, err := ix.stream.Info(ctx); err == nil {
		ix.known = max(ix.known, info.State.LastSeq)
	} else {
		return fmt.Errorf("sessions: stream %s: %w", events.AuditStream, err)
	}
	return ix.openConsumer(ctx)
}

// openConsumer (re)makes the consumer, starting after the last message
// read. Messages a previous consumer delivered and no save acknowledged
// would otherwise come back only after their ack wait, behind newer ones,
// and the index must read a session's messages in order.
func (ix *Index) openConsumer(ctx context.Context) error {
	if err := ix.stream.DeleteConsumer(ctx, IndexConsumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("sessions: consumer %s: %w", IndexConsumer, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       IndexConsumer,
		Description:   "Tollgate sessions index (the broker's)",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		// Saves acknowledge every few seconds; a redelivery would only
		// repeat what was read.
		AckWait:       5 * time.Minute,
		MaxAckPending: maxAckPending,
	}
	if ix.read > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, ix.read+1
	}
	cons, err := ix.stream.CreateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("sessions: consumer %s: %w", IndexConsumer, err)
	}
	ix.cons, ix.last, ix.delivered = cons, nil, 0
	// A message read in part comes again: the sessions that counted it
	// know it by their LastSeq.
	for _, t := range ix.live {
		t.cur = 0
	}
	return nil
}

// Stop ends the index after a last save.
func (ix *Index) Stop() {
	ix.cancel()
	<-ix.done
}

// Sync waits until the index has saved every message stored in AUDIT when
// it is called, whichever broker keeps it.
func (ix *Index) Sync(ctx context.Context) error {
	info, err := ix.stream.Info(ctx)
	if err != nil {
		return err
	}
	want := info.State.LastSeq
	for {
		ix.mu.Lock()
		ch := ix.savedCh
		ix.mu.Unlock()
		var p indexProgress
		if _, err := getJSON(ctx, ix.kv, progressKey, &p); err != nil {
			return err
		}
		if p.Seq >= want {
			return nil
		}
		select {
		case <-ch:
		case <-time.After(ix.every):
		case <-ix.done:
			return errors.New("sessions: the index stopped")
		case <-ctx.Done():
			return fmt.Errorf("sessions: index at %d of %d: %w", p.Seq, want, context.Cause(ctx))
		}
	}
}

// run keeps the index while this broker holds the lease, and waits to
// take it over while another one does.
func (ix *Index) run(ctx context.Context, leading bool) {
	defer close(ix.done)
	for ctx.Err() == nil {
		if leading {
			ix.keep(ctx)
			leading = false
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(ix.every):
		}
		ok, err := ix.lease.acquire(ctx)
		if err != nil && ctx.Err() == nil {
			ix.log.Warn("sessions index: lease", "err", err)
		}
		if !ok {
			continue
		}
		ix.log.Info("sessions index: keeping it")
		if err := ix.begin(ctx); err != nil {
			ix.log.Warn("sessions index: start", "err", err)
			ix.lease.release(ctx)
			continue
		}
		leading = true
	}
}

// keep reads AUDIT into the index until ctx ends or the lease is lost.
func (ix *Index) keep(ctx context.Context) {
	defer func() {
		if ctx.Err() == nil {
			return // lost the lease: the index is another broker's
		}
		// The last save outlives ctx: what was read is not lost, and the
		// lease goes at once to a broker waiting for it.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := ix.save(sctx); err != nil {
			ix.log.Warn("sessions index: last save", "err", err)
		}
		ix.lease.release(sctx)
	}()
	lastSave := time.Now()
	for ctx.Err() == nil {
		if err := ix.lease.renewIfDue(ctx); err != nil {
			ix.log.Warn("sessions index: lease lost, another broker keeps the index", "err", err)
			return
		}
		// FetchMaxWait rather than a context: a fetch cut short drops
		// deliveries already on their way.
		batch, err := ix.cons.Fetch(fetchBatch, jetstream.FetchMaxWait(ix.every))
		if err != nil {
			// The consumer may be gone (deleted, its stream remade): a
			// new one starts after the last message read.
			ix.log.Warn("sessions index: fetch", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(ix.every):
				if err := ix.openConsumer(ctx); err != nil {
					ix.log.Warn("sessions index: consumer", "err", err)
				}
			}
			continue
		}
		complete := true
		for msg := range batch.Messages() {
			if !complete {
				continue // drained: the consumer starts again after the last read
			}
			meta, err := msg.Metadata()
			if err != nil || ix.delivered != 0 && meta.Sequence.Consumer != ix.delivered+1 {
				complete = false
				continue
			}
			ix.delivered = meta.Sequence.Consumer
			if meta.Sequence.Stream <= ix.read {
				continue // delivered again: read already
			}
			if err := ix.apply(ctx, meta.Sequence.Stream, msg.Data()); err != nil {
				complete = false // ctx ended while reading an entry
				continue
			}
			ix.last = msg
			if ix.unsaved >= maxUnsaved {
				ix.saveOrLog(ctx)
				lastSave = time.Now()
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
			ix.log.Warn("sessions index: fetch", "err", err)
			complete = false
		}
		if time.Since(lastSave) >= ix.every || !complete {
			ix.saveOrLog(ctx)
			lastSave = time.Now()
		}
		if !complete && ctx.Err() == nil {
			if err := ix.openConsumer(ctx); err != nil {
				ix.log.Warn("sessions index: consumer", "err", err)
			}
		}
	}
}

func (ix *Index) saveOrLog(ctx context.Context) {
	if err := ix.save(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, errLeaseLost) {
		ix.log.Warn("sessions index: save", "err", err)
		// The next save is the periodic one, not one per message read;
		// meanwhile the consumer's max ack pending holds the rest back.
		ix.unsaved = 0
	}
}

// apply reads one AUDIT message at sequence seq. An event that does not
// decode is skipped: the index cannot stop at it. An error means an entry
// could not be read before ctx ended: the message is not read, and the
// sessions it counted already will not count it again.
func (ix *Index) apply(ctx context.Context, seq uint64, data []byte) error {
	now := time.Now()
	err := events.SplitEvents(data, func(ev []byte) error {
		b := &ix.brief
		if !b.scan(ev) {
			return nil
		}
		sid, ok := str(b.sid)
		if !ok || len(sid) == 0 {
			return nil
		}
		typ, _ := str(b.typ)
		t := ix.live[string(sid)]
		r := &ix.ev
		*r = sessionFields{}
		// Starts and ends carry what the summary says of the session, and
		// a session met for the first time is made from its event.
		if t == nil || string(typ) == "db.session.start" || string(typ) == "db.session.end" {
			if json.Unmarshal(ev, r) != nil || r.SID == "" {
				return nil
			}
		} else if !b.fields(r) {
			return nil
		}
		if t == nil {
			var err error
			if t, err = ix.session(ctx, r, seq); err != nil {
				return err
			}
		}
		if t.cur != seq {
			if seq <= t.LastSeq {
				return nil // counted before a restart
			}
			t.cur = seq
			t.seqs = append(t.seqs, seq)
			if t.FirstSeq == 0 {
				t.FirstSeq = seq
			}
			t.LastSeq = seq
			t.Frames++
		}
		t.Session.apply(r)
		t.dirty, t.touched = true, now
		return nil
	})
	if err != nil {
		return err
	}
	ix.read, ix.unsaved = seq, ix.unsaved+1
	return nil
}

// session is the tracked session of event r, from memory, from its entry,
// or new.
func (ix *Index) session(ctx context.Context, r *sessionFields, seq uint64) (*tracked, error) {
	if t := ix.live[r.SID]; t != nil {
		return t, nil
	}
	t := &tracked{key: indexKey(r.SID)}
	// A session first met with its start after anything the bucket may
	// count is new: no read for it.
	if r.Type != "db.session.start" || seq <= ix.known {
		found, err := ix.get(ctx, summaryKey(t.key), &t.indexed)
		if err != nil {
			return nil, err
		}
		if found {
			t.base = int(t.Frames / chunkSize)
			if t.Frames%chunkSize != 0 {
				var c chunk
				if _, err := ix.get(ctx, chunkKey(t.key, t.base), &c); err != nil {
					return nil, err
				}
				t.seqs = c.Seqs
			}
		}
	}
	if t.SID == "" {
		t.Session = *newSession(r)
	}
	ix.live[r.SID] = t
	return t, nil
}

// get reads a key, trying again until it can or ctx ends: skipping the
// session would lose its events.
func (ix *Index) get(ctx context.Context, key string, v any) (bool, error) {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		found, err := getJSON(ctx, ix.kv, key, v)
		if err == nil {
			return found, nil
		}
		ix.log.Warn("sessions index: read entry", "key", key, "err", err)
		select {
		case <-ctx.Done():
			return false, context.Cause(ctx)
		case <-time.After(wait):
		}
	}
}

// save writes the sessions read since the last save, then the progress,
// then acknowledges the consumer: chunks before the entries naming them,
// entries before the progress saying they are written.
func (ix *Index) save(ctx context.Context) error {
	ix.mu.Lock()
	saved := ix.saved
	ix.mu.Unlock()
	if ix.read == saved {
		return nil
	}
	// The lease first: a broker that lost it writes nothing.
	if err := ix.lease.renew(ctx); err != nil {
		return err
	}
	var chunks, entries []kvWrite
	for _, t := range ix.live {
		if !t.dirty {
			continue
		}
		for i := 0; i*chunkSize < len(t.seqs); i++ {
			part := t.seqs[i*chunkSize : min((i+1)*chunkSize, len(t.seqs))]
			chunks = append(chunks, kvWrite{chunkKey(t.key, t.base+i), chunk{Seqs: part}})
		}
		entries = append(entries, kvWrite{summaryKey(t.key), &t.indexed})
	}
	if err := ix.write(ctx, chunks); err != nil {
		return err
	}
	if err := ix.write(ctx, entries); err != nil {
		return err
	}
	if err := ix.write(ctx, []kvWrite{{progressKey, indexProgress{Seq: ix.read}}}); err != nil {
		return err
	}
	if ix.last != nil {
		if err := ix.last.Ack(); err != nil {
			ix.log.Warn("sessions index: ack", "err", err)
		}
	}
	now := time.Now()
	for sid, t := range ix.live {
		t.dirty = false
		// Full chunks are written once: they leave memory.
		if full := len(t.seqs) / chunkSize; full > 0 {
			t.seqs = append([]uint64(nil), t.seqs[full*chunkSize:]...)
			t.base += full
		}
		if !t.End.IsZero() || now.Sub(t.touched) >= idleEvict {
			delete(ix.live, sid)
		}
	}
	ix.unsaved = 0
	ix.mu.Lock()
	ix.saved = ix.read
	close(ix.savedCh)
	ix.savedCh = make(chan struct{})
	ix.mu.Unlock()
	return nil
}

// kvWrite is one key to write and its value.
type kvWrite struct {
	key string
	val any
}

// write puts every value without waiting for each: one round trip for
// the lot rather than one per key.
func (ix *Index) write(ctx context.Context, ws []kvWrite) error {
	const inFlight = 1000
	for len(ws) > 0 {
		part := ws[:min(inFlight, len(ws))]
		ws = ws[len(part):]
		futs := make([]jetstream.PubAckFuture, 0, len(part))
		for _, w := range part {
			b, err := json.Marshal(w.val)
			if err != nil {
				return err
			}
			f, err := ix.js.PublishAsync("$KV."+IndexBucket+"."+w.key, b)
			if err != nil {
				return fmt.Errorf("sessions: index %s: %w", w.key, err)
			}
			futs = append(futs, f)
		}
		for i, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("sessions: index %s: %w", part[i].key, err)
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
	return nil
}
