// Package verify checks that an audit trail is whole: every session's
// events gapless and in order from its start to its end, no event stored
// twice, no hole in the stream's sequence. It reads events as stored (a
// live AUDIT stream) or as an exporter delivered them (JSON lines).
package verify

import (
	"fmt"
	"slices"
	"strings"
)

// Event types the checker gives a meaning to.
const (
	typeStart = "db.session.start"
	typeEnd   = "db.session.end"
)

// Defect is one way the trail is not whole.
type Defect struct {
	// Seq is the stream sequence where it was found (0 in a file).
	Seq     uint64
	EventID string
	SID     string
	What    string
}

func (d Defect) String() string {
	var b strings.Builder
	if d.Seq > 0 {
		fmt.Fprintf(&b, "seq %d ", d.Seq)
	}
	if d.EventID != "" {
		fmt.Fprintf(&b, "event %s ", d.EventID)
	}
	if d.SID != "" {
		fmt.Fprintf(&b, "session %s ", d.SID)
	}
	b.WriteString(d.What)
	return b.String()
}

// Summary is what a check found.
type Summary struct {
	Events, Duplicates int
	Sessions, Ended    int
	// Open are sessions with no end event: still live, or cut short.
	Open []string
	// Partial are sessions whose start is not in what was read (older
	// than the stream's retention or than --since).
	Partial           int
	FirstSeq, LastSeq uint64
	Defects           []Defect
}

// Intact reports whether no defect was found.
func (s Summary) Intact() bool { return len(s.Defects) == 0 }

// Options shape a Checker.
type Options struct {
	// Sequenced says the events come from a stream read without a subject
	// filter, so consecutive sequences must follow each other.
	Sequenced bool
	// AllowHead says a session may begin after ei 0 without a defect: the
	// read began after the stream's first event (retention, --since).
	AllowHead bool
	// Duplicates says an event may come more than once (an exporter's
	// copy is delivered at least once); otherwise a second copy is a
	// defect.
	Duplicates bool
}

// Checker takes events one at a time, in stream order.
type Checker struct {
	o        Options
	sessions map[string]*session
	ids      map[string]uint64
	sum      Summary
}

// session collects what a session's events say. Its events may be stored
// out of ei order (a retried publish, a result stored by the background
// path after the next statement): order is checked by ei, at Finish.
type session struct {
	eis      []uint64
	ids      []string // of eis, same order
	startEI  uint64
	started  bool
	endEI    uint64
	ended    bool
	firstSeq uint64
}

// New returns an empty Checker.
func New(o Options) *Checker {
	return &Checker{o: o, sessions: map[string]*session{}, ids: map[string]uint64{}}
}

// fields are what the checker reads of an event.
type fields struct {
	ID, Type, SID string
	EI            *uint64
}

func (c *Checker) defect(seq uint64, id, sid, format string, args ...any) {
	c.sum.Defects = append(c.sum.Defects, Defect{Seq: seq, EventID: id, SID: sid, What: fmt.Sprintf(format, args...)})
}

// Add checks one event stored at stream sequence seq (0 when unknown).
func (c *Checker) Add(seq uint64, data []byte) {
	if seq > 0 {
		if c.o.Sequenced && c.sum.LastSeq > 0 && seq != c.sum.LastSeq+1 {
			c.defect(seq, "", "", "stream sequences %d to %d are missing: events removed from the stream", c.sum.LastSeq+1, seq-1)
		}
		if c.sum.FirstSeq == 0 {
			c.sum.FirstSeq = seq
		}
		c.sum.LastSeq = seq
	}
	f, err := scanFields(data)
	if err != nil {
		c.defect(seq, "", "", "not a JSON event: %v", err)
		return
	}
	if f.ID == "" || f.Type == "" {
		c.defect(seq, f.ID, f.SID, "event without id or type")
		return
	}
	if first, dup := c.ids[f.ID]; dup {
		if c.o.Duplicates {
			c.sum.Duplicates++
			return
		}
		c.defect(seq, f.ID, f.SID, "stored twice (first at seq %d)", first)
		return
	}
	c.ids[f.ID] = seq
	c.sum.Events++
	if f.SID == "" || f.EI == nil {
		return // not a session event
	}
	s := c.sessions[f.SID]
	if s == nil {
		s = &session{firstSeq: seq}
		c.sessions[f.SID] = s
	}
	s.eis = append(s.eis, *f.EI)
	s.ids = append(s.ids, f.ID)
	switch f.Type {
	case typeStart:
		s.started, s.startEI = true, *f.EI
	case typeEnd:
		if s.ended {
			c.defect(seq, f.ID, f.SID, "a second %s", typeEnd)
		}
		s.ended, s.endEI = true, *f.EI
	}
}

// check finds a session's gaps, repeats and events after its end.
func (c *Checker) check(sid string, s *session) {
	if s.started && s.startEI != 0 {
		c.defect(s.firstSeq, "", sid, "%s at ei %d, not 0", typeStart, s.startEI)
	}
	order := make([]int, len(s.eis))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmpUint(s.eis[a], s.eis[b]) })
	first := s.eis[order[0]]
	if first > 0 {
		if c.o.AllowHead {
			c.sum.Partial++
		} else {
			c.defect(s.firstSeq, "", sid, "the session's first event is ei %d: events 0 to %d are missing", first, first-1)
		}
	}
	for k := 1; k < len(order); k++ {
		prev, cur := s.eis[order[k-1]], s.eis[order[k]]
		switch {
		case cur == prev:
			c.defect(0, s.ids[order[k]], sid, "ei %d is held by two events (%s and %s)", cur, s.ids[order[k-1]], s.ids[order[k]])
		case cur > prev+1:
			c.defect(0, "", sid, "ei %d to %d are missing", prev+1, cur-1)
		}
	}
	if s.ended {
		if last := s.eis[order[len(order)-1]]; last > s.endEI {
			c.defect(0, "", sid, "events up to ei %d come after the session's end at ei %d", last, s.endEI)
		}
	}
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Finish returns the summary: every session, ended or open.
func (c *Checker) Finish() Summary {
	c.sum.Sessions = len(c.sessions)
	c.sum.Open = c.sum.Open[:0]
	sids := make([]string, 0, len(c.sessions))
	for sid := range c.sessions {
		sids = append(sids, sid)
	}
	slices.Sort(sids)
	for _, sid := range sids {
		s := c.sessions[sid]
		c.check(sid, s)
		if s.ended {
			c.sum.Ended++
		} else {
			c.sum.Open = append(c.sum.Open, sid)
		}
	}
	slices.Sort(c.sum.Open)
	return c.sum
}

// Line is the one-line summary of an intact trail, or of the defects.
func (s Summary) Line() string {
	verdict := "intact"
	if !s.Intact() {
		verdict = fmt.Sprintf("%d defects", len(s.Defects))
	}
	line := fmt.Sprintf("%s: %d events, %d sessions (%d ended, %d open", verdict, s.Events, s.Sessions, s.Ended, len(s.Open))
	if s.Partial > 0 {
		line += fmt.Sprintf(", %d begun before what was read", s.Partial)
	}
	line += ")"
	if s.LastSeq > 0 {
		line += fmt.Sprintf(", stream sequences %d to %d", s.FirstSeq, s.LastSeq)
	}
	if s.Duplicates > 0 {
		line += fmt.Sprintf(", %d copies delivered twice", s.Duplicates)
	}
	return line
}
