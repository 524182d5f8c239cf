package events

import (
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
)

// outcome is implemented by events that embed Status.
type outcome interface{ Succeeded() bool }

// NewID returns a new event id: a ULID, unique and sortable by time.
func NewID() string { return ulid.Make().String() }

// Stamp fills the envelope fields that come from the registry and the
// clock: id, type, code, time and cluster, each only where it is still empty,
// so a re-published event keeps its id and is deduplicated.
func Stamp(ev Event, cluster string) error {
	h := ev.Header()
	if h.Type == "" || h.Code == "" {
		s, ok := SpecOf(ev)
		if !ok {
			return fmt.Errorf("events: %T is not a registered event type", ev)
		}
		h.Type, h.Code = s.Type, s.Code
		if o, ok := ev.(outcome); ok && !o.Succeeded() && s.FailCode != "" {
			h.Code = s.FailCode
		}
	}
	if h.ID == "" {
		h.ID = NewID()
	}
	if h.Time.IsZero() {
		h.Time = time.Now().UTC()
	}
	if h.Cluster == "" {
		h.Cluster = cluster
	}
	return nil
}
