package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// The session index is a JetStream key-value bucket the broker keeps
// (indexer.go) so that listing sessions reads one small entry per session
// and replaying one reads only the AUDIT messages that hold its events:
// since AUDIT stores frames (many sessions' events in one message), no
// subject filter selects a session or an event type any more.
//
// Keys:
//
//	s.<sid>        the session's summary and where its events are (indexed)
//	f.<sid>.<n>    the AUDIT sequences of its messages, chunkSize a key
//	progress       every AUDIT message up to this sequence is in the index
//
// A sid is written with every byte outside [A-Za-z0-9_-] as =XX, which
// keys do not allow.
const (
	// IndexBucket is the bucket of the session index.
	IndexBucket = "SESSIONS"
	// chunkSize is how many AUDIT sequences one f. key holds: a long
	// session's list grows by new keys, each written once it is full, so
	// the entry rewritten while the session is live stays small.
	chunkSize   = 256
	progressKey = "progress"
)

// indexed is a session's entry in the index.
type indexed struct {
	Session
	// FirstSeq and LastSeq are the AUDIT sequences of the first and last
	// messages holding an event of the session, Frames how many messages
	// do (the sequences are in its f. keys).
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Frames   uint64 `json:"frames"`
}

// chunks is how many f. keys hold the entry's sequences.
func (e *indexed) chunks() int { return int((e.Frames + chunkSize - 1) / chunkSize) }

// indexProgress is the value of the progress key.
type indexProgress struct {
	Seq uint64 `json:"seq"`
}

// chunk is the value of an f. key.
type chunk struct {
	Seqs []uint64 `json:"seqs"`
}

// indexKey is the key of a session id: the sid itself when every byte is
// allowed in a key, else escaped.
func indexKey(sid string) string {
	safe := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
	}
	i := 0
	for i < len(sid) && safe(sid[i]) {
		i++
	}
	if i == len(sid) {
		return sid
	}
	var b strings.Builder
	b.WriteString(sid[:i])
	for ; i < len(sid); i++ {
		if c := sid[i]; safe(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	return b.String()
}

func summaryKey(key string) string      { return "s." + key }
func chunkKey(key string, n int) string { return "f." + key + "." + strconv.Itoa(n) }

// openIndex returns the index bucket and how far it has read AUDIT; a nil
// bucket when the broker never made one (a stream from before the index),
// which reads as an index that has read nothing.
func openIndex(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, uint64, error) {
	kv, err := js.KeyValue(ctx, IndexBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("sessions: index %s: %w", IndexBucket, err)
	}
	var p indexProgress
	if _, err := getJSON(ctx, kv, progressKey, &p); err != nil {
		return nil, 0, err
	}
	return kv, p.Seq, nil
}

// getJSON reads key into v; false when there is no such key.
func getJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any) (bool, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sessions: index %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return false, fmt.Errorf("sessions: index %s: %w", key, err)
	}
	return true, nil
}

// List returns the sessions f keeps: their entries in the index, brought
// up to date with the AUDIT messages the index has not read yet (a few
// seconds of them while the broker runs; the whole stream when no broker
// ever indexed it).
func List(ctx context.Context, js jetstream.JetStream, f Filter) ([]Session, error) {
	kv, from, err := openIndex(ctx, js)
	if err != nil {
		return nil, err
	}
	p := NewProjection()
	// last is how far each entry has read: the unread messages may be
	// older than an entry written after the progress key.
	last := map[string]uint64{}
	if kv != nil {
		w, err := kv.Watch(ctx, "s.>", jetstream.IgnoreDeletes())
		if err != nil {
			return nil, fmt.Errorf("sessions: index %s: %w", IndexBucket, err)
		}
		for e := range w.Updates() {
			if e == nil {
				break // every entry delivered
			}
			var ix indexed
			if err := json.Unmarshal(e.Value(), &ix); err != nil || ix.SID == "" {
				continue // not an entry this build wrote
			}
			s := ix.Session
			p.byID[s.SID] = &s
			last[s.SID] = ix.LastSeq
		}
		if err := w.Stop(); err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	var r sessionFields
	err = readFrom(ctx, js, from+1, nil, func(seq uint64, data []byte) error {
		return events.SplitEvents(data, func(ev []byte) error {
			r = sessionFields{}
			if json.Unmarshal(ev, &r) != nil || r.SID == "" || last[r.SID] >= seq {
				return nil // not ours to judge (exporters dead-letter such events), or counted
			}
			p.apply(&r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return p.Sessions(f), nil
}

// eventSID is the session an encoded event belongs to, read without
// decoding the rest of it.
func eventSID(ev []byte) string {
	var r struct {
		SID string `json:"sid"`
	}
	if json.Unmarshal(ev, &r) != nil {
		return ""
	}
	return r.SID
}

// sessionFilters select the AUDIT messages that may hold events of sid:
// every frame, and the single events stored under the session's own
// subject before frames.
func sessionFilters(sid string) []string {
	if sid == events.FrameSubject {
		return nil // the two filters would overlap, which JetStream refuses
	}
	return []string{events.SessionFilter(sid), "audit.*." + events.FrameSubject + ".>"}
}

// loadEvents calls fn with every event of session sid stored in AUDIT, in
// stream order. The index names the messages holding them; a live
// session's newest messages, not indexed yet, are among those stored since
// the index last read AUDIT, which are read too (a few seconds of them
// while the broker runs).
func loadEvents(ctx context.Context, js jetstream.JetStream, sid string, fn func(seq uint64, idx int, ev []byte) error) error {
	kv, from, err := openIndex(ctx, js)
	if err != nil {
		return err
	}
	each := func(seq uint64, data []byte) error {
		idx := -1
		return events.SplitEvents(data, func(ev []byte) error {
			idx++
			if eventSID(ev) != sid {
				return nil
			}
			return fn(seq, idx, ev)
		})
	}
	var e indexed
	found := false
	if kv != nil {
		if found, err = getJSON(ctx, kv, summaryKey(indexKey(sid)), &e); err != nil {
			return err
		}
	}
	if !found {
		// Not in the index: either the index has not read the session's
		// messages yet, or no broker ever indexed this stream (one from
		// before the index). Either way only the messages after its
		// progress can hold the session: that bounded scan, with the
		// filters that skip other sessions' single events, is the whole
		// stream only in the second case.
		return readFrom(ctx, js, from+1, sessionFilters(sid), each)
	}
	seqs, err := indexedSeqs(ctx, kv, indexKey(sid), &e)
	if err != nil {
		return err
	}
	if err := fetchSeqs(ctx, js, seqs, each); err != nil {
		return err
	}
	if !e.End.IsZero() {
		return nil // ended: the entry names all its messages
	}
	return readFrom(ctx, js, max(from, e.LastSeq)+1, sessionFilters(sid), each)
}

// Events calls fn with every event of session sid stored in AUDIT, as
// Load reads them (the messages the index names, then those stored since
// it last read AUDIT), with the stream sequence of its message and its
// index in that message, so a caller can page by stream position.
func Events(ctx context.Context, js jetstream.JetStream, sid string, fn func(seq uint64, idx int, ev []byte) error) error {
	if err := events.ValidToken(sid); err != nil {
		return fmt.Errorf("session id: %w", err)
	}
	return loadEvents(ctx, js, sid, fn)
}

// indexedSeqs reads the AUDIT sequences of an entry's messages.
func indexedSeqs(ctx context.Context, kv jetstream.KeyValue, key string, e *indexed) ([]uint64, error) {
	seqs := make([]uint64, 0, e.Frames)
	for n := range e.chunks() {
		var c chunk
		if _, err := getJSON(ctx, kv, chunkKey(key, n), &c); err != nil {
			return nil, err
		}
		seqs = append(seqs, c.Seqs...)
	}
	// The last chunk may have grown since the entry was read; what it
	// added is read with the messages after the entry.
	if uint64(len(seqs)) > e.Frames {
		seqs = seqs[:e.Frames]
	}
	return seqs, nil
}

// fetchers is how many direct gets of one replay are in flight at once:
// each is a round trip, and a long session has many messages.
const fetchers = 8

// fetchSeqs reads the AUDIT messages seqs names and calls fn with each, in
// the order of seqs. A message gone from the stream (past its retention)
// is skipped: the session's events then show a gap.
func fetchSeqs(ctx context.Context, js jetstream.JetStream, seqs []uint64, fn func(seq uint64, data []byte) error) error {
	if len(seqs) == 0 {
		return nil
	}
	stream, err := js.Stream(ctx, events.AuditStream)
	if err != nil {
		return fmt.Errorf("sessions: stream %s: %w", events.AuditStream, err)
	}
	const window = 256
	data := make([][]byte, window)
	errs := make([]error, window)
	for len(seqs) > 0 {
		part := seqs[:min(window, len(seqs))]
		seqs = seqs[len(part):]
		var wg sync.WaitGroup
		next := make(chan int)
		for range min(fetchers, len(part)) {
			wg.Go(func() {
				for i := range next {
					if onFetch != nil {
						onFetch(part[i])
					}
					m, err := stream.GetMsg(ctx, part[i])
					data[i], errs[i] = nil, nil
					switch {
					case errors.Is(err, jetstream.ErrMsgNotFound):
					case err != nil:
						errs[i] = fmt.Errorf("sessions: read %s sequence %d: %w", events.AuditStream, part[i], err)
					default:
						data[i] = m.Data
					}
				}
			})
		}
		for i := range part {
			next <- i
		}
		close(next)
		wg.Wait()
		for i, seq := range part {
			if errs[i] != nil {
				return errs[i]
			}
			if data[i] == nil {
				continue
			}
			if err := fn(seq, data[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// readFrom delivers every message stored under filters (all of AUDIT when
// none) from sequence start on, in stream order, up to the stream's last
// message when read began.
func readFrom(ctx context.Context, js jetstream.JetStream, start uint64, filters []string, fn func(seq uint64, data []byte) error) error {
	stream, err := js.Stream(ctx, events.AuditStream)
	if err != nil {
		return fmt.Errorf("sessions: stream %s: %w", events.AuditStream, err)
	}
	if last := stream.CachedInfo().State.LastSeq; start > last {
		return nil // nothing stored since
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy}
	if start > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("sessions: consumer on %s: %w", events.AuditStream, err)
	}
	info := cons.CachedInfo()
	if info == nil {
		if info, err = cons.Info(ctx); err != nil {
			return err
		}
	}
	pending := info.NumPending
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 1024)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("sessions: read %s: %w", events.AuditStream, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return err
			}
			if onFetch != nil {
				onFetch(meta.Sequence.Stream)
			}
			if err := fn(meta.Sequence.Stream, msg.Data()); err != nil {
				return err
			}
			pending = meta.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("sessions: read %s: %w", events.AuditStream, err)
		}
		if n == 0 {
			return fmt.Errorf("sessions: read %s: %d messages announced but none came", events.AuditStream, pending)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// onFetch, when set (by tests), is called with the sequence of every AUDIT
// message a reader fetches.
var onFetch func(seq uint64)
