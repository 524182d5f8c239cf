package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// run is one writer run's frames, as far as they were read. Frames are
// checked against each other at Finish, in fseq order: after an outage a
// writer resends the frames in flight, which the store may then hold out
// of their order; the chain, not the stream position, orders them.
type run struct {
	src, id string
	frames  []frameRec
	// last is the latest time a frame of the run covers.
	last time.Time
}

// frameRec is what the run check needs of one frame.
type frameRec struct {
	fseq, seq  uint64
	hash, prev string
	signed     bool
	label      string
	// ids are the frame's event ids, kept for unsigned frames only: they
	// are named if no later signature covers them.
	ids []string
}

// frameRead is the frame whose events are being added.
type frameRead struct {
	h   *events.FrameHeader
	run *run
}

// addFrame checks a frame: its signature and signer, its place in its
// run's chain, its header against its events; then each event.
func (c *Checker) addFrame(seq uint64, data []byte) {
	f, err := events.DecodeFrame(data)
	if err != nil {
		c.defect(seq, "", "", "unreadable frame (%v): its events are checked without it", err)
		// Its events still count for their sessions, so what is reported
		// is the frame, not a cascade of gaps; nothing vouches for them.
		_ = events.SplitEvents(data, func(ev []byte) error {
			c.addEvent(seq, ev, nil)
			return nil
		})
		return
	}
	h := f.Header
	c.sum.Frames++
	sum := sha256.Sum256(f.Signed)
	hash := base64.RawStdEncoding.EncodeToString(sum[:])

	key := h.Src + "\x00" + h.Run
	r := c.runs[key]
	if r == nil {
		r = &run{src: h.Src, id: h.Run}
		c.runs[key] = r
		c.sum.Runs++
	}
	if h.Last.After(r.last) {
		r.last = h.Last
	}
	if h.Last.After(c.latest) {
		c.latest = h.Last
	}
	if h.StateSeq > 0 {
		c.stateSeqs = append(c.stateSeqs, h.StateSeq)
	}
	rec := frameRec{fseq: h.FSeq, seq: seq, hash: hash, prev: h.Prev, signed: f.Trailer != nil, label: frameLabel(h)}
	if f.Trailer == nil {
		rec.ids = frameIDs(f)
	}
	r.frames = append(r.frames, rec)

	fr := &frameRead{h: h, run: r}
	var first, last time.Time
	var sids []string
	ids := make([]string, 0, len(f.Events))
	for _, ev := range f.Events {
		fl, _ := c.addEvent(seq, ev, fr)
		if fl.ID != "" {
			ids = append(ids, fl.ID)
		}
		if fl.SID != "" && !slices.Contains(sids, fl.SID) {
			sids = append(sids, fl.SID)
		}
		if t := fl.At; !t.IsZero() {
			if first.IsZero() || t.Before(first) {
				first = t
			}
			if t.After(last) {
				last = t
			}
		}
	}
	switch {
	case f.Trailer == nil:
		// Proven by the next signed frame of its run (checkRuns).
	case c.signers.root == nil:
		c.sum.Unchecked++
	default:
		if cert, err := c.signers.get([]byte(f.Trailer.Cert), h.Last); err != nil {
			c.frameDefect(seq, f, "signature not trusted: "+err.Error())
		} else {
			// Named if it fails: the frame itself is not kept.
			label := frameLabel(h)
			c.verifyLater(&sigCheck{cert: cert, sum: sum, hashed: true, sig: f.Trailer.Sig, done: func(err error) {
				if err != nil {
					c.addFrameDefect(seq, label, ids, fmt.Sprintf("signature by %q does not verify (%v): the frame was changed after it was signed", cert.Subject.CommonName, err))
				}
			}})
		}
	}

	if !sameSet(sids, h.SIDs) {
		c.frameDefect(seq, f, fmt.Sprintf("header names sessions %v, its events belong to %v", h.SIDs, sids))
	}
	switch {
	case len(f.Events) == 0:
		// A checkpoint: no events; its header's time is when the writer
		// cut it (the time its signer's certificate is checked at).
		if !h.First.Equal(h.Last) {
			c.frameDefect(seq, f, fmt.Sprintf("header of a frame without events spans %s to %s, not one time",
				h.First.Format(time.RFC3339Nano), h.Last.Format(time.RFC3339Nano)))
		}
	case !first.Equal(h.First) || !last.Equal(h.Last):
		c.frameDefect(seq, f, fmt.Sprintf("header says its events span %s to %s, they span %s to %s",
			h.First.Format(time.RFC3339Nano), h.Last.Format(time.RFC3339Nano), first.Format(time.RFC3339Nano), last.Format(time.RFC3339Nano)))
	}
}

// frameDefect names a frame and the events it holds.
func (c *Checker) frameDefect(seq uint64, f *events.Frame, what string) {
	c.addFrameDefect(seq, frameLabel(f.Header), frameIDs(f), what)
}

func (c *Checker) addFrameDefect(seq uint64, label string, ids []string, what string) {
	if len(ids) > 0 {
		what += "; its events: " + strings.Join(ids, " ")
	}
	c.sum.Defects = append(c.sum.Defects, Defect{Seq: seq, Frame: label, What: what})
}

func frameLabel(h *events.FrameHeader) string {
	return fmt.Sprintf("%s (writer %s run %s fseq %d)", h.ID, h.Src, h.Run, h.FSeq)
}

// frameIDs are the ids of a frame's events.
func frameIDs(f *events.Frame) []string {
	ids := make([]string, 0, len(f.Events))
	for _, ev := range f.Events {
		if fl, err := scanFields(ev); err == nil {
			if fl.ID != "" {
				ids = append(ids, fl.ID)
			}
		}
	}
	return ids
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, s := range a {
		if !slices.Contains(b, s) {
			return false
		}
	}
	return true
}

// checkRuns checks each writer run's frames in fseq order: gapless from 0
// (or from the first read, after retention or --since), each naming the
// hash of the one before, and each covered by a signature: its own or a
// later frame's, since every frame's prev chains it to those before. A run
// whose last frames are signed by none is a defect once the store went on
// for TruncatedAfter without them (a writer signs an idle run's tail within
// milliseconds; frames added behind its back are never signed), or at once
// under Strict.
func (c *Checker) checkRuns() {
	keys := make([]string, 0, len(c.runs))
	for k := range c.runs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		r := c.runs[k]
		fs := r.frames
		slices.SortStableFunc(fs, func(a, b frameRec) int { return cmpUint(a.fseq, b.fseq) })
		first := fs[0]
		switch {
		case first.fseq == 0 && first.prev != events.FrameGenesis(r.id):
			c.addFrameDefect(first.seq, first.label, first.ids, "is its run's first frame but its prev is not the run's genesis: a frame was inserted")
		case first.fseq > 0 && !c.o.AllowHead:
			c.addFrameDefect(first.seq, first.label, first.ids, fmt.Sprintf("is the first frame read of its run: frames fseq 0 to %d are missing", first.fseq-1))
		}
		for i := 1; i < len(fs); i++ {
			p, f := fs[i-1], fs[i]
			switch {
			case f.fseq == p.fseq && f.hash == p.hash:
				c.addFrameDefect(f.seq, f.label, f.ids, fmt.Sprintf("is stored twice (first at seq %d)", p.seq))
			case f.fseq == p.fseq:
				c.addFrameDefect(f.seq, f.label, f.ids, fmt.Sprintf("has the fseq of the frame at seq %d: one of the two was inserted or replaced", p.seq))
			case f.fseq > p.fseq+1:
				c.addFrameDefect(f.seq, f.label, f.ids, fmt.Sprintf("follows fseq %d: frames fseq %d to %d of the run are missing", p.fseq, p.fseq+1, f.fseq-1))
			case f.prev != p.hash:
				c.addFrameDefect(f.seq, f.label, f.ids, fmt.Sprintf("prev does not match the hash of fseq %d: a frame was changed, replaced or inserted", p.fseq))
			}
		}
		last := len(fs) - 1
		for last >= 0 && !fs[last].signed {
			last--
		}
		tail := fs[last+1:]
		if len(tail) == 0 {
			continue
		}
		stale := c.o.TruncatedAfter > 0 && c.latest.Sub(r.last) > c.o.TruncatedAfter
		if !c.o.Strict && !stale {
			c.sum.UnsignedTail += len(tail)
			continue
		}
		var ids []string
		for _, f := range tail {
			ids = append(ids, f.ids...)
		}
		c.addFrameDefect(tail[0].seq, tail[0].label, ids, fmt.Sprintf("and the %d frames after it in its run (to fseq %d) are signed by no frame: the writer stopped before signing them, or they were added", len(tail)-1, tail[len(tail)-1].fseq))
	}
}

// checkStateCopies checks the broker's trail: every STATE event is copied
// into AUDIT in a frame naming its STATE sequence, so the copies read must
// cover their range of STATE sequences without a hole. A hole is a STATE
// change (a user, role, lock, grant…) missing from the audit trail. The
// copies' range is what was read: the trail may be behind the STATE
// stream's tail, and --since starts later.
func (c *Checker) checkStateCopies() {
	seqs := c.stateSeqs
	slices.Sort(seqs)
	for i := 1; i < len(seqs); i++ {
		switch p, s := seqs[i-1], seqs[i]; {
		case s == p:
			c.defect(0, "", "", "STATE event %d is copied into AUDIT twice", s)
		case s > p+1:
			c.defect(0, "", "", "STATE events %d to %d have no copy in AUDIT: the trail of changes misses them", p+1, s-1)
		}
	}
	c.sum.StateCopies = len(seqs)
}
