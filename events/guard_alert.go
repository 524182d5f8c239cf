package events

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// alertTimeout bounds storing one alert, so a store that does not answer
// delays the guard's next check by no more than this.
const alertTimeout = 5 * time.Second

// AlertRecorder stores events; *Publisher is one. When it also has
// PublishAlert (as *Publisher does), alerts are stored through it, so a
// publisher suspended by a guard still records the fault.
type AlertRecorder interface {
	Publish(ctx context.Context, ev Event) error
}

// StreamAlerts returns a guard notify function (WithGuardNotify) for the
// broker: every fault is logged at error level and stored as an
// audit.stream_weakened event by user with rec, if AUDIT still takes it.
// Once AUDIT is sound again, an alert that could not be stored (AUDIT
// deleted, say) is stored, and one stored in the weakened stream, where it
// may be lost, is stored again as a copy marked stored_again. rec may be
// nil: then faults are only logged.
func StreamAlerts(ctx context.Context, rec AlertRecorder, log *slog.Logger, user string) func(fault error) {
	if log == nil {
		log = slog.Default()
	}
	type alert struct {
		ev *StreamWeakened
		// weak is set once ev was stored while the stream was weakened.
		weak bool
	}
	var (
		mu      sync.Mutex
		pending []*alert
	)
	store := func(ev *StreamWeakened) error {
		if rec == nil {
			return nil
		}
		sctx, cancel := context.WithTimeout(ctx, alertTimeout)
		defer cancel()
		if a, ok := rec.(interface {
			PublishAlert(context.Context, Event) error
		}); ok {
			return a.PublishAlert(sctx, ev)
		}
		return rec.Publish(sctx, ev)
	}
	return func(fault error) {
		mu.Lock()
		defer mu.Unlock()
		if fault != nil {
			ev := NewStreamWeakened(fault)
			ev.User = user
			log.Error("AUDIT stream missing or weakened: events could be lost or erased; strict agents refuse statements until it is restored",
				"stream", ev.Stream, "fault", ev.Fault, "defects", ev.Defects)
			pending = append(pending, &alert{ev: ev})
		} else {
			log.Warn("AUDIT stream sound again", "stream", AuditStream)
		}
		kept := pending[:0]
		for _, a := range pending {
			switch {
			case fault != nil && a.weak:
				kept = append(kept, a)
				continue
			case fault == nil && a.weak:
				again := *a.ev
				again.ID, again.StoredAgain = "", true
				a.ev, a.weak = &again, false
			}
			// A retry keeps the event's id, so it is stored once.
			if err := store(a.ev); err != nil {
				log.Error("alert not stored in AUDIT; it will be once AUDIT is sound", "type", a.ev.Type, "id", a.ev.ID, "fault", a.ev.Fault, "error", err)
				kept = append(kept, a)
				continue
			}
			if fault != nil {
				a.weak = true
				kept = append(kept, a)
			}
		}
		clear(pending[len(kept):])
		pending = kept
	}
}
