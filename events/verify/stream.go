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
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return Summary{}, fmt.Errorf("stream %s: %w", so.Stream, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return Summary{}, err
		}
		c.Add(md.Sequence.Stream, msg.Data())
		if md.NumPending == 0 {
			return c.Finish(), nil
		}
	}
}
