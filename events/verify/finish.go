package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"slices"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// check finds a session's gaps, repeats, events after its end and broken
// links of its chain.
func (c *Checker) check(sid string, s *session) {
	if s.started && s.startEI != 0 {
		c.defect(s.firstSeq, "", sid, "%s at ei %d, not 0", typeStart, s.startEI)
	}
	slices.SortStableFunc(s.evs, func(a, b sev) int { return cmpUint(a.ei, b.ei) })
	first := s.evs[0].ei
	if first > 0 {
		if c.o.AllowHead {
			c.sum.Partial++
		} else {
			c.defect(s.firstSeq, "", sid, "the session's first event is ei %d: events 0 to %d are missing", first, first-1)
		}
	}
	for k := 1; k < len(s.evs); k++ {
		prev, cur := s.evs[k-1].ei, s.evs[k].ei
		switch {
		case cur == prev:
			c.defect(0, s.evs[k].id, sid, "ei %d is held by two events (%s and %s)", cur, s.evs[k-1].id, s.evs[k].id)
		case cur > prev+1:
			c.defect(0, "", sid, "ei %d to %d are missing", prev+1, cur-1)
		}
	}
	if s.ended {
		if last := s.evs[len(s.evs)-1].ei; last > s.endEI {
			c.defect(0, "", sid, "events up to ei %d come after the session's end at ei %d", last, s.endEI)
		}
	}
	if s.chained {
		c.checkChain(sid, s)
	} else {
		c.sum.Unchained++
		if c.o.Strict {
			c.defect(s.firstSeq, "", sid, "its events carry no prev: the session is not chained (written before chains)")
		}
	}
	switch {
	case !s.ended && s.refused:
		// Refused before it began: its chain is all there is.
	case !s.ended:
		c.checkOpen(sid, s)
	case s.chained && !s.hasSeal:
		c.defect(0, "", sid, "its %s carries no seal: the session is not sealed", typeEnd)
	case s.sealed:
		c.sum.Sealed++
	}
}

// checkChain follows the session's chain from its genesis: each event
// names the hash of the event accepted before it, so walking from the
// genesis through every event's hash must reach every event once. The
// walk follows the links, not ei: a writer chains events in the order it
// accepts them, which a session's background path can make differ from
// ei. A changed or removed event breaks the walk at the event after it;
// an inserted one makes two events follow the same one.
func (c *Checker) checkChain(sid string, s *session) {
	var genesis [sha256.Size]byte
	if _, err := base64.RawStdEncoding.Decode(genesis[:], []byte(events.ChainGenesis(sid))); err != nil {
		panic(err) // our own encoding
	}
	next := make(map[[sha256.Size]byte]int, len(s.evs))
	hashes := make(map[[sha256.Size]byte]bool, len(s.evs))
	for k := range s.evs {
		hashes[s.evs[k].hash] = true
	}
	var heads []int
	for k := range s.evs {
		e := &s.evs[k]
		switch {
		case !e.hasPrev:
			c.defect(e.seq, e.id, sid, "ei %d carries no prev in a chained session", e.ei)
			continue
		case e.prevBad:
			c.defect(e.seq, e.id, sid, "ei %d: prev is not a SHA-256 in base64", e.ei)
			continue
		}
		if j, dup := next[e.prev]; dup {
			c.defect(e.seq, e.id, sid, "ei %d and ei %d (%s) follow the same event: one of them was inserted", e.ei, s.evs[j].ei, s.evs[j].id)
			continue
		}
		next[e.prev] = k
		if e.prev != genesis && !hashes[e.prev] {
			heads = append(heads, k)
		}
	}
	if _, ok := next[genesis]; !ok {
		switch {
		case s.evs[0].ei == 0:
			c.defect(s.evs[0].seq, s.evs[0].id, sid, "ei 0: prev is not the session's genesis: the session's first event was replaced")
		case c.o.AllowHead && len(heads) > 0:
			// The session began before what was read: its first event
			// read stands in for the genesis.
			heads = heads[1:]
		}
	}
	for _, k := range heads {
		e := &s.evs[k]
		// s.evs is in ei order (check sorted it): the event before by ei
		// is the likeliest one changed.
		before := ""
		if k > 0 && s.evs[k-1].ei+1 == e.ei {
			before = fmt.Sprintf(" (ei %d, event %s)", s.evs[k-1].ei, s.evs[k-1].id)
		}
		c.defect(e.seq, e.id, sid, "ei %d: prev matches no event of the session: the event before it%s was changed or removed, or this one was inserted", e.ei, before)
	}
}

// checkOpen judges a session without its end.
func (c *Checker) checkOpen(sid string, s *session) {
	switch {
	case c.o.TruncatedAfter > 0 && s.run != nil && s.run.last.Sub(s.last) > c.o.TruncatedAfter:
		c.defect(0, s.evs[len(s.evs)-1].id, sid, "truncated: no %s, yet its writer %s (run %s) stored frames until %s, %s after the session's last",
			typeEnd, s.run.src, s.run.id, s.run.last.UTC().Format(time.RFC3339), s.run.last.Sub(s.last).Round(time.Second))
	case c.o.Strict:
		c.defect(0, s.evs[len(s.evs)-1].id, sid, "open: no %s after ei %d, so no seal (still live, or cut short)", typeEnd, s.evs[len(s.evs)-1].ei)
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
	c.drain()
	c.checkRuns()
	c.checkStateCopies()
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
		switch {
		case s.ended:
			c.sum.Ended++
		case s.refused:
			c.sum.Refused++
		default:
			c.sum.Open = append(c.sum.Open, sid)
		}
	}
	if c.o.Strict && c.sum.Unsigned > 0 {
		c.defect(c.firstUnsigned, "", "", "%d events stored alone, not in a signed frame (the first at this sequence): unsigned legacy events", c.sum.Unsigned)
	}
	return c.sum
}

// Line is the one-line summary of an intact trail, or of the defects.
func (s Summary) Line() string {
	verdict := "intact"
	if !s.Intact() {
		verdict = fmt.Sprintf("%d defects", len(s.Defects))
	}
	line := fmt.Sprintf("%s: %d events, %d sessions (%d ended, %d sealed, %d open", verdict, s.Events, s.Sessions, s.Ended, s.Sealed, len(s.Open))
	if s.Refused > 0 {
		line += fmt.Sprintf(", %d refused before they began", s.Refused)
	}
	if s.Partial > 0 {
		line += fmt.Sprintf(", %d begun before what was read", s.Partial)
	}
	if s.Unchained > 0 {
		line += fmt.Sprintf(", %d unchained", s.Unchained)
	}
	line += ")"
	if s.Frames > 0 {
		line += fmt.Sprintf(", %d frames from %d writer runs", s.Frames, s.Runs)
	}
	if s.StateCopies > 0 {
		line += fmt.Sprintf(", %d STATE changes", s.StateCopies)
	}
	if s.Unsigned > 0 {
		line += fmt.Sprintf(", %d unsigned legacy events", s.Unsigned)
	}
	if s.Unchecked > 0 {
		line += fmt.Sprintf(", %d signatures not checked (no host CA)", s.Unchecked)
	}
	if s.UnsignedTail > 0 {
		line += fmt.Sprintf(", %d frames of live runs awaiting their signature", s.UnsignedTail)
	}
	if s.LastSeq > 0 {
		line += fmt.Sprintf(", stream sequences %d to %d", s.FirstSeq, s.LastSeq)
	}
	if s.Duplicates > 0 {
		line += fmt.Sprintf(", %d copies delivered twice", s.Duplicates)
	}
	return line
}
