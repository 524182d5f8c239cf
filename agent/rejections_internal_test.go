package agent

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

type emitted struct {
	mu  sync.Mutex
	evs []events.SessionRejected
}

func (e *emitted) emit(ev *events.SessionRejected) {
	e.mu.Lock()
	e.evs = append(e.evs, *ev)
	e.mu.Unlock()
}

func (e *emitted) all() []events.SessionRejected {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]events.SessionRejected(nil), e.evs...)
}

func refusal(ip string, port int, reason string) *events.SessionRejected {
	return rejected(&net.TCPAddr{IP: net.ParseIP(ip), Port: port}, reason, errors.New("refused #"+fmt.Sprint(port)))
}

func TestRejectionsFirstAtOnceThenOnePerWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out emitted
		r := newRejections(10*time.Second, 8, out.emit)
		start := time.Now().UTC()
		r.add(refusal("192.0.2.1", 1, events.RejectBadStartup))
		if evs := out.all(); len(evs) != 1 || evs[0].Count != 1 || !evs[0].First.Equal(start) || evs[0].ClientIP != "192.0.2.1" {
			t.Fatalf("first refusal: %+v", evs)
		}
		// 99 more within the window, one a tenth of a second apart.
		for i := 2; i <= 100; i++ {
			time.Sleep(90 * time.Millisecond)
			r.add(refusal("192.0.2.1", i, events.RejectBadStartup))
		}
		if n := len(out.all()); n != 1 {
			t.Fatalf("%d events before the window ended, want 1", n)
		}
		time.Sleep(10*time.Second - 99*90*time.Millisecond)
		synctest.Wait()
		evs := out.all()
		if len(evs) != 2 {
			t.Fatalf("%d events after the window, want 2", len(evs))
		}
		agg := evs[1]
		if agg.Count != 99 || !agg.First.Equal(start.Add(90*time.Millisecond)) || !agg.Last.Equal(start.Add(99*90*time.Millisecond)) {
			t.Errorf("aggregate: count %d first %s last %s", agg.Count, agg.First.Sub(start), agg.Last.Sub(start))
		}
		if agg.ClientAddr != "192.0.2.1:100" || agg.Error != "refused #100" || agg.WindowNs != int64(10*time.Second) {
			t.Errorf("aggregate details are not the last refusal's: %+v", agg)
		}
		// A quiet window forgets the source; the next refusal is
		// reported at once again.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := r.tracked(); n != 0 {
			t.Errorf("%d sources tracked after a quiet window", n)
		}
		r.add(refusal("192.0.2.1", 101, events.RejectBadStartup))
		if evs := out.all(); len(evs) != 3 || evs[2].Count != 1 {
			t.Fatalf("after a quiet window: %+v", evs[2:])
		}
		r.close()
	})
}

func TestRejectionsPerSourceAndReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out emitted
		r := newRejections(10*time.Second, 8, out.emit)
		r.add(refusal("192.0.2.1", 1, events.RejectBadStartup))
		r.add(refusal("192.0.2.1", 2, events.RejectNoCertificate))
		r.add(refusal("192.0.2.2", 3, events.RejectBadStartup))
		r.add(refusal("192.0.2.2", 4, events.RejectBadStartup))
		if n := len(out.all()); n != 3 {
			t.Fatalf("%d events at once, want 3 (one per source and reason)", n)
		}
		// A sustained flood: one event per window.
		for range 50 {
			time.Sleep(time.Second)
			r.add(refusal("192.0.2.2", 5, events.RejectBadStartup))
		}
		synctest.Wait()
		var n int
		var total uint64
		for _, ev := range out.all() {
			if ev.ClientIP == "192.0.2.2" {
				n++
				total += ev.Count
			}
		}
		if n < 5 || n > 7 {
			t.Errorf("%d events for 52 refusals over 50s, want about one per 10s window", n)
		}
		r.close() // reports what is still counted
		total = 0
		for _, ev := range out.all() {
			if ev.ClientIP == "192.0.2.2" {
				total += ev.Count
			}
		}
		if total != 52 {
			t.Errorf("events count %d refusals, want 52", total)
		}
	})
}

func TestRejectionsBoundedSources(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out emitted
		r := newRejections(10*time.Second, 4, out.emit)
		for i := range 1000 {
			r.add(refusal(fmt.Sprintf("198.51.100.%d", i%250), i, events.RejectTLSHandshake))
		}
		if n := r.tracked(); n != 5 {
			t.Errorf("%d entries tracked, want 4 sources and the overflow", n)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		evs := out.all()
		var total uint64
		overflow := 0
		for _, ev := range evs {
			total += ev.Count
			if ev.Reason == events.RejectOverflow {
				overflow++
			}
		}
		if total != 1000 {
			t.Errorf("events count %d refusals, want 1000", total)
		}
		if len(evs) > 10 || overflow != 2 {
			t.Errorf("%d events, %d of them overflow; want at most 10, 2 overflow (the first at once, the rest in one)", len(evs), overflow)
		}
		r.close()
	})
}
