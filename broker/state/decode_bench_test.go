package state

import (
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// BenchmarkDecodeApply is the per-event cost of replay without the
// transport: find the type, decode, apply.
func BenchmarkDecodeApply(b *testing.B) {
	mk := func(ev events.Event) []byte {
		h := ev.Header()
		h.User, h.Roles, h.Time = "admin", []string{"editor"}, time.Now().UTC()
		if err := events.Stamp(ev, "bench"); err != nil {
			b.Fatal(err)
		}
		d, err := json.Marshal(ev)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	msgs := [][]byte{
		mk(&events.UserUpdate{Name: "user00001", UserRoles: []string{"access", "requester"},
			Traits: map[string][]string{"db_users": {"user00001", "ro_3"}, "db_names": {"app"}}}),
		mk(&events.LockCreate{LockID: events.NewID(), TargetUser: "user00001", Message: "incident"}),
		mk(&events.TokenCreate{TokenID: TokenID("x"), TokenType: TokenDB, Expires: time.Now().Add(time.Hour), SingleUse: true}),
		mk(&events.TokenUse{Status: events.Status{Success: true}, TokenID: TokenID("x"), TokenType: TokenDB, HostID: "host-1"}),
	}
	p := newProjection()
	p.apply(&events.UserCreate{Name: "user00001"})
	b.ReportAllocs()
	cpu0 := cpuTime()
	for i := 0; b.Loop(); i++ {
		ev, err := decode(msgs[i%len(msgs)], p.intern)
		if err != nil || ev == nil {
			b.Fatal(err)
		}
		p.apply(ev)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/event")
}

// cpuTime is the CPU time (user and system) the process has used so far.
// On a machine shared with other work, wall time says little; CPU time
// says what replay costs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
