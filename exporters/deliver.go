package exporters

import (
	"context"
	"errors"
	"time"
)

// process delivers one batch and dead-letters its poison.
func (x *Exporter) process(soft, hard context.Context, w *work) {
	defer x.handBack(w)
	if soft.Err() != nil {
		return
	}
	for _, p := range w.poison {
		if err := x.deadLetter(soft, hard, p.rec, p.item, p.err); err != nil {
			return
		}
	}
	if len(w.recs) > 0 {
		_ = x.deliver(soft, hard, w.recs, w.items)
	}
}

// deliver sends recs until the sink confirmed or rejected each of them,
// settling their items as it goes. It returns an error only when the
// exporter is stopping; the unsettled items are then handed back.
func (x *Exporter) deliver(soft, hard context.Context, recs []Record, items []*item) error {
	for attempt := 0; ; {
		start := time.Now()
		err := x.o.Sink.Deliver(hard, recs)
		if err == nil {
			x.acked(recs, items, time.Since(start))
			return nil
		}
		if hard.Err() != nil {
			return hard.Err()
		}
		var re RecordErrors
		switch {
		case errors.As(err, &re):
			var retryRecs []Record
			var retryItems []*item
			var firstRetry error
			for i := range recs {
				e, failed := re[i]
				switch {
				case !failed:
					x.acked(recs[i:i+1], items[i:i+1], 0)
				case IsPermanent(e):
					if derr := x.deadLetter(soft, hard, recs[i], items[i], e); derr != nil {
						return derr
					}
				default:
					if firstRetry == nil {
						firstRetry = e
					}
					retryRecs = append(retryRecs, recs[i])
					retryItems = append(retryItems, items[i])
				}
			}
			if len(retryRecs) == 0 {
				return nil
			}
			// Only the failed records are tried again.
			recs, items, err = retryRecs, retryItems, firstRetry
		case IsPermanent(err):
			if len(recs) == 1 {
				return x.deadLetter(soft, hard, recs[0], items[0], err)
			}
			// The sink refused the batch without saying which event it
			// objects to: halve it until the culprits are alone.
			mid := len(recs) / 2
			if err := x.deliver(soft, hard, recs[:mid], items[:mid]); err != nil {
				return err
			}
			return x.deliver(soft, hard, recs[mid:], items[mid:])
		}
		x.retried(err, len(recs))
		if !sleep(soft, x.backoff(attempt)) {
			return soft.Err()
		}
		attempt++
	}
}

// acked settles delivered events: their messages are acknowledged to
// JetStream once every event of each is settled.
func (x *Exporter) acked(recs []Record, items []*item, took time.Duration) {
	var n uint64
	for i, it := range items {
		if it.settled {
			continue
		}
		it.settle()
		n += uint64(len(recs[i].Data))
	}
	x.c.delivered.Add(uint64(len(recs)))
	x.c.bytes.Add(n)
	x.c.setDelivered()
	if x.o.Metrics != nil {
		x.o.Metrics.delivered.WithLabelValues(x.o.Name).Add(float64(len(recs)))
		x.o.Metrics.bytes.WithLabelValues(x.o.Name).Add(float64(n))
		if took > 0 {
			x.o.Metrics.batch.WithLabelValues(x.o.Name).Observe(took.Seconds())
		}
	}
}

func (x *Exporter) retried(err error, n int) {
	retries := x.c.retries.Add(1)
	x.c.setError(err)
	if x.o.Metrics != nil {
		x.o.Metrics.retries.WithLabelValues(x.o.Name).Inc()
	}
	// The first failure and then one in 20 are logged: a sink down for an
	// hour must not flood the log.
	if retries == 1 || retries%20 == 0 {
		x.log.Warn("delivery failed; retrying", "events", n, "retries", retries, "err", err)
	}
}
