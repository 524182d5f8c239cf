package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// Several brokers may run against one NATS cluster, but two keeping the
// index would split its consumer's messages between them and overwrite
// each other's entries. The one that holds the lease key keeps it: it
// renews the lease (a compare-and-set on the key's revision) before every
// save and every few seconds; a broker that finds the lease another's and
// current waits, and takes it over once its holder released it (at stop)
// or let it lapse (gone). A broker stalled longer than the lease between
// its renewal and the writes of a save could still write once after a
// successor began; the lease lasts ten saves so that takes a long stall.
const leaseKey = "lease"

var errLeaseLost = errors.New("sessions: the index lease is another broker's")

type lease struct {
	kv     jetstream.KeyValue
	holder string
	// dur is how long a lease lasts unrenewed, every how often it is
	// renewed.
	dur, every time.Duration
	// rev is the revision of this broker's lease value, 0 when it does
	// not hold the lease; renewed when it last wrote it.
	rev     uint64
	renewed time.Time
}

// leaseValue is the value of the lease key.
type leaseValue struct {
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

func newLease(kv jetstream.KeyValue, every time.Duration) *lease {
	host, _ := os.Hostname()
	return &lease{kv: kv, holder: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), events.NewID()),
		dur: max(10*every, 20*time.Second), every: every}
}

func (l *lease) value() []byte {
	b, _ := json.Marshal(leaseValue{Holder: l.holder, Until: time.Now().Add(l.dur)})
	return b
}

// acquire takes the lease when no other broker holds a current one.
func (l *lease) acquire(ctx context.Context) (bool, error) {
	e, err := l.kv.Get(ctx, leaseKey)
	var rev uint64
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err = l.kv.Create(ctx, leaseKey, l.value())
	case err != nil:
		return false, fmt.Errorf("sessions: index lease: %w", err)
	default:
		var v leaseValue
		if json.Unmarshal(e.Value(), &v) == nil && v.Holder != l.holder && time.Now().Before(v.Until) {
			return false, nil
		}
		rev, err = l.kv.Update(ctx, leaseKey, l.value(), e.Revision())
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return false, nil // another broker was quicker
	}
	if err != nil {
		return false, fmt.Errorf("sessions: index lease: %w", err)
	}
	l.rev, l.renewed = rev, time.Now()
	return true, nil
}

// renew extends the lease; errLeaseLost when it is no longer this
// broker's, or could not be renewed before it lapsed.
func (l *lease) renew(ctx context.Context) error {
	if l.rev == 0 {
		return errLeaseLost
	}
	rev, err := l.kv.Update(ctx, leaseKey, l.value(), l.rev)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || time.Since(l.renewed) >= l.dur {
			l.rev = 0
			return fmt.Errorf("%w: %w", errLeaseLost, err)
		}
		return fmt.Errorf("sessions: index lease: %w", err)
	}
	l.rev, l.renewed = rev, time.Now()
	return nil
}

// renewIfDue renews the lease when the last renewal is a save period old.
func (l *lease) renewIfDue(ctx context.Context) error {
	if l.rev != 0 && time.Since(l.renewed) < l.every {
		return nil
	}
	err := l.renew(ctx)
	if errors.Is(err, errLeaseLost) {
		return err
	}
	return nil // a passing failure: the next try, before the lease lapses
}

// release gives the lease up, so a waiting broker takes over at once.
func (l *lease) release(ctx context.Context) {
	if l.rev == 0 {
		return
	}
	_ = l.kv.Delete(ctx, leaseKey, jetstream.LastRevision(l.rev))
	l.rev = 0
}
