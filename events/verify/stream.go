package verify

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions say what of the AUDIT stream to check.
type StreamOptions struct {
	// Stream is the stream's name (AUDIT).
	Stream string
	// Filter is a subject filter (one session's), empty for all.
	Filter string
	// Since, when set, starts at the first event stored at or after it.
	Since time.Time
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
	if so.Filter != "" {
		oc.FilterSubjects = []string{so.Filter}
	}
	o := Options{
		Sequenced: so.Filter == "",
		// Retention has removed the stream's oldest events: sessions begun
		// before what is left are not cut.
		AllowHead: info.State.FirstSeq > 1,
	}
	if !so.Since.IsZero() {
		t := so.Since
		oc.DeliverPolicy, oc.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
		o.AllowHead = true
	}
	c := New(o)
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
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
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
		seq := md.Sequence.Stream
		if !o.Sequenced {
			seq = 0 // a filtered read skips other sessions' sequences
		}
		c.Add(seq, msg.Data())
		if md.NumPending == 0 {
			return c.Finish(), nil
		}
	}
}
