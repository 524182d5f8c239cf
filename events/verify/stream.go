package verify

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions say what of the AUDIT stream to check.
type StreamOptions struct {
	// Stream is the stream's name (AUDIT).
	Stream string
	// SID, when set, checks one session's events. The whole stream is
	// still read: frames hold many sessions' events under a subject
	// that names none, and their chain is what proves none was removed.
	SID string
	// Since, when set, starts at the first message stored at or after it.
	Since time.Time
	// Stall is how long the read waits for a message the stream says it
	// holds (default 15 s): a damaged store may never deliver it, and the
	// check must end and say so rather than wait.
	Stall time.Duration
	// HostCA, Strict and TruncatedAfter are as in Options.
	HostCA         *x509.Certificate
	Strict         bool
	TruncatedAfter time.Duration
}

// Stream checks a stream read from the start (or Since) to its last event
// at the time of the call.
func Stream(ctx context.Context, js jetstream.JetStream, so StreamOptions) (Summary, error) {
	st, err := js.Stream(ctx, so.Stream)
	if err != nil {
		return Summary{}, fmt.Errorf("stream %s: %w", so.Stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return Summary{}, fmt.Errorf("stream %s: %w", so.Stream, err)
	}
	oc := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	o := Options{
		Sequenced: true,
		// Retention has removed the stream's oldest events: sessions begun
		// before what is left are not cut.
		AllowHead:      info.State.FirstSeq > 1,
		HostCA:         so.HostCA,
		Strict:         so.Strict,
		TruncatedAfter: so.TruncatedAfter,
		SID:            so.SID,
	}
	if !so.Since.IsZero() {
		t := so.Since
		oc.DeliverPolicy, oc.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
		o.AllowHead = true
	}
	c := New(o)
	defer c.drain()
	if info.State.Msgs == 0 {
		return c.Finish(), nil
	}
	cons, err := st.OrderedConsumer(ctx, oc)
	if err != nil {
		return Summary{}, fmt.Errorf("stream %s: %w", so.Stream, err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return Summary{}, err
	}
	if ci.NumPending == 0 {
		return c.Finish(), nil
	}
	// Bounded by bytes: a frame is tens of kilobytes, a single event
	// hundreds of bytes.
	it, err := cons.Messages(jetstream.PullMaxBytes(16 << 20))
	if err != nil {
		return Summary{}, fmt.Errorf("stream %s: %w", so.Stream, err)
	}
	defer it.Stop()
	stall := so.Stall
	if stall <= 0 {
		stall = 15 * time.Second
	}
	last := info.State.LastSeq
	for {
		nctx, cancel := context.WithTimeout(ctx, stall)
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil && ctx.Err() == nil && nctx.Err() != nil {
			from := c.sum.LastSeq + 1
			if c.sum.LastSeq == 0 {
				from = info.State.FirstSeq
			}
			if from <= last {
				c.defect(from, "", "", "stream sequences %d to %d could not be read: the store did not deliver them within %s", from, last, stall)
			} else {
				c.defect(c.sum.LastSeq, "", "", "the stream counts %d messages but delivered none after sequence %d within %s: its count and its store disagree (a damaged store)", info.State.Msgs, c.sum.LastSeq, stall)
			}
			return c.Finish(), nil
		}
		if err != nil {
			return Summary{}, fmt.Errorf("stream %s: %w", so.Stream, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return Summary{}, err
		}
		c.Add(md.Sequence.Stream, msg.Data())
		if md.Sequence.Stream >= last && md.NumPending > 0 {
			// What the stream held at the call is read; a damaged store
			// may still count messages it cannot deliver (their hole is
			// named), and later messages are for the next check.
			return c.Finish(), nil
		}
		if md.NumPending == 0 {
			if seq := md.Sequence.Stream; seq < last {
				// The stream's state remembers a later message than the
				// last one it delivered: its tail was removed.
				c.defect(seq+1, "", "", "stream sequences %d to %d are missing: the stream's last messages were removed", seq+1, last)
			}
			return c.Finish(), nil
		}
	}
}
