package exporters

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/tollgate-db/tollgate/events"
)

// Headers of a message in the DEADLETTER stream; its data is the event as
// it was stored.
const (
	HeaderExporter  = "Tollgate-Exporter"
	HeaderStream    = "Tollgate-Stream"
	HeaderStreamSeq = "Tollgate-Stream-Seq"
	HeaderSubject   = "Tollgate-Subject"
	HeaderEventID   = "Tollgate-Event-Id"
	HeaderReason    = "Tollgate-Reason"
	// HeaderFrameEvent is the event's place (from 0) in the frame stored
	// at HeaderStreamSeq; absent for a message holding one event.
	HeaderFrameEvent = "Tollgate-Frame-Event"
)

// maxReason bounds the sink's answer kept in headers and events.
const maxReason = 1024

// deadLetter stores a rejected event in the DEADLETTER stream, reports it
// with an exporter.dead_letter event, then settles it: an event of a frame
// is stored and reported alone, and the frame is acknowledged once its
// other events are settled too. It retries
// until both are stored, or returns an error when the exporter stops.
func (x *Exporter) deadLetter(soft, hard context.Context, r Record, it *item, cause error) error {
	if it.settled {
		return nil
	}
	if r.Seq == 0 {
		if md, err := it.m.msg.Metadata(); err == nil {
			r.Seq = md.Sequence.Stream
		}
	}
	for attempt := 0; ; attempt++ {
		err := x.deadLetterOnce(hard, r, it, cause)
		if err == nil {
			it.settle()
			x.c.deadLetters.Add(1)
			if x.o.Metrics != nil {
				x.o.Metrics.deadLetters.WithLabelValues(x.o.Name).Inc()
			}
			x.log.Warn("event dead-lettered", "stream", r.Stream, "seq", r.Seq, "id", r.ID, "type", r.Type, "bytes", len(r.Event), "reason", cause)
			return nil
		}
		if hard.Err() != nil {
			return hard.Err()
		}
		x.retried(fmt.Errorf("dead-lettering event %s: %w", r.ID, err), 1)
		if !sleep(soft, x.backoff(attempt)) {
			return soft.Err()
		}
	}
}

func (x *Exporter) deadLetterOnce(ctx context.Context, r Record, it *item, cause error) error {
	reason := cause.Error()
	if len(reason) > maxReason {
		reason = reason[:maxReason] + "…"
	}
	subject := DeadLetterSubject(x.o.Name, r.Stream)
	m := nats.NewMsg(subject)
	m.Data = r.Event
	seq := strconv.FormatUint(r.Seq, 10)
	where := seq
	if it.inFrame {
		where += "." + strconv.Itoa(it.idx)
	}
	// One copy per exporter and stored event, however often it is retried
	// within the stream's duplicate window.
	m.Header.Set(jetstream.MsgIDHeader, x.o.Name+"."+r.Stream+"."+where)
	m.Header.Set(HeaderExporter, x.o.Name)
	m.Header.Set(HeaderStream, r.Stream)
	m.Header.Set(HeaderStreamSeq, seq)
	if it.inFrame {
		m.Header.Set(HeaderFrameEvent, strconv.Itoa(it.idx))
	}
	m.Header.Set(HeaderSubject, r.Subject)
	if r.ID != "" {
		m.Header.Set(HeaderEventID, r.ID)
	}
	m.Header.Set(HeaderReason, headerSafe(reason))
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := x.o.JS.PublishMsg(pctx, m); err != nil {
		return fmt.Errorf("store in %s: %w", DeadLetterStream, err)
	}
	if r.Type == "exporter.dead_letter" {
		// A report about a dead letter that is itself dead-lettered is
		// not reported again: a sink refusing every event would otherwise
		// loop on its own reports.
		return nil
	}
	id := r.ID
	if id == "" {
		id = "stream " + r.Stream + " seq " + seq
		if it.inFrame {
			id += " event " + strconv.Itoa(it.idx)
		}
	}
	ev := &events.ExporterDeadLetter{
		Exporter: x.o.Name, Sink: x.o.SinkType, Stream: r.Stream, StreamSeq: r.Seq,
		EventID: id, EventType: r.Type, EventBytes: len(r.Event), Reason: reason, DeadLetterSubject: subject,
	}
	ev.ID = deadLetterID(x.o.Name, r, it)
	if err := x.o.Publisher.Publish(pctx, ev); err != nil {
		return fmt.Errorf("report exporter.dead_letter: %w", err)
	}
	return nil
}

// deadLetterID derives the report's id from the exporter and the stored
// event, so a report sent again after a crash is deduplicated by
// JetStream instead of stored twice.
func deadLetterID(name string, r Record, it *item) string {
	key := name + "\x00" + r.Stream + "\x00" + strconv.FormatUint(r.Seq, 10) + "\x00" + r.ID
	if it.inFrame {
		// Events of one frame share its sequence; an unreadable one may
		// have no id either.
		key += "\x00" + strconv.Itoa(it.idx)
	}
	h := sha256.Sum256([]byte(key))
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	return ulid.MustNew(ulid.Timestamp(t), bytes.NewReader(h[:])).String()
}

// headerSafe keeps a header value on one line.
func headerSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\r' || c == '\n' {
			b[i] = ' '
		}
	}
	return string(b)
}
