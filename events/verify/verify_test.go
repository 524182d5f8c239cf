package verify

import (
	"fmt"
	"strings"
	"testing"
)

func ev(id, typ, sid string, ei int) []byte {
	if sid == "" {
		return fmt.Appendf(nil, `{"id":%q,"type":%q,"time":"2026-01-01T00:00:00Z"}`, id, typ)
	}
	return fmt.Appendf(nil, `{"id":%q,"type":%q,"sid":%q,"ei":%d}`, id, typ, sid, ei)
}

// wholeSession writes a whole session of n events: start, queries, end.
func wholeSession(sid string, n int) [][]byte {
	var out [][]byte
	for i := range n {
		typ := "db.session.query"
		switch i {
		case 0:
			typ = typeStart
		case n - 1:
			typ = typeEnd
		}
		out = append(out, ev(fmt.Sprintf("%s-%d", sid, i), typ, sid, i))
	}
	return out
}

func runEvents(o Options, evs [][]byte, seqs []uint64) Summary {
	c := New(o)
	for i, e := range evs {
		var seq uint64
		if seqs != nil {
			seq = seqs[i]
		}
		c.Add(seq, e)
	}
	return c.Finish()
}

func seqFrom(n int) []uint64 {
	s := make([]uint64, n)
	for i := range s {
		s[i] = uint64(i + 1)
	}
	return s
}

func TestIntactTrail(t *testing.T) {
	evs := append(wholeSession("a", 5), wholeSession("b", 3)...)
	evs = append(evs, ev("login", "user.login", "", 0))
	// b's result stored after a's next statement: out of ei order is fine.
	evs[5], evs[6] = evs[6], evs[5]
	s := runEvents(Options{Sequenced: true}, evs, seqFrom(len(evs)))
	if !s.Intact() || s.Events != 9 || s.Sessions != 2 || s.Ended != 2 || len(s.Open) != 0 {
		t.Fatalf("%+v", s)
	}
	if !strings.HasPrefix(s.Line(), "intact: 9 events, 2 sessions (2 ended, 0 sealed, 0 open, 2 unchained)") {
		t.Fatal(s.Line())
	}
}

func TestDefectsNamed(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func([][]byte) ([][]byte, []uint64)
		want string
	}{
		{"event removed from a session", func(e [][]byte) ([][]byte, []uint64) {
			return append(e[:2:2], e[3:]...), nil
		}, "ei 2 to 2 are missing"},
		{"stream hole", func(e [][]byte) ([][]byte, []uint64) {
			s := seqFrom(len(e))
			for i := 3; i < len(s); i++ {
				s[i] += 4
			}
			return e, s
		}, "stream sequences 4 to 7 are missing"},
		{"event inserted with a taken ei", func(e [][]byte) ([][]byte, []uint64) {
			return append(e, ev("forged", "db.session.query", "a", 2)), nil
		}, "ei 2 is held by two events"},
		{"event after the end", func(e [][]byte) ([][]byte, []uint64) {
			return append(e, ev("late", "db.session.query", "a", 5)), nil
		}, "come after the session's end"},
		{"head cut", func(e [][]byte) ([][]byte, []uint64) { return e[2:], nil }, "events 0 to 1 are missing"},
		{"stored twice", func(e [][]byte) ([][]byte, []uint64) { return append(e, e[1]), nil }, "stored twice"},
		{"not JSON", func(e [][]byte) ([][]byte, []uint64) { return append(e, []byte("{oops")), nil }, "not a JSON event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, seqs := tc.edit(wholeSession("a", 5))
			s := runEvents(Options{Sequenced: seqs != nil}, evs, seqs)
			if s.Intact() {
				t.Fatalf("not found: %+v", s)
			}
			var all []string
			for _, d := range s.Defects {
				all = append(all, d.String())
			}
			if !strings.Contains(strings.Join(all, "\n"), tc.want) {
				t.Fatalf("defects %q, want one naming %q", all, tc.want)
			}
		})
	}
}

func TestOpenAndPartialSessions(t *testing.T) {
	evs := wholeSession("a", 4)[:3] // no end: live or cut short
	evs = append(evs, wholeSession("b", 4)[2:]...)
	s := runEvents(Options{AllowHead: true}, evs, nil)
	if !s.Intact() || len(s.Open) != 1 || s.Open[0] != "a" || s.Partial != 1 {
		t.Fatalf("%+v", s)
	}
	// An exporter's copy may hold an event twice.
	s = runEvents(Options{Duplicates: true}, append(wholeSession("c", 3), wholeSession("c", 3)[1]), nil)
	if !s.Intact() || s.Duplicates != 1 {
		t.Fatalf("%+v", s)
	}
}

// BenchmarkCheck is the checker's cost per event (the aim: 1M events in
// under 10 s, reading included).
func BenchmarkCheck(b *testing.B) {
	evs := make([][]byte, 0, 1000)
	for i := range 10 {
		evs = append(evs, wholeSession(fmt.Sprintf("01JSESSION%016d", i), 100)...)
	}
	pad := strings.Repeat("x", 300)
	for i, e := range evs {
		evs[i] = append(e[:len(e)-1], fmt.Sprintf(`,"db_query":%q}`, pad)...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c := New(Options{Sequenced: true})
		for i, e := range evs {
			c.Add(uint64(i+1), e)
		}
		c.Finish()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/event")
}
