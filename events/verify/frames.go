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

// run is one writer run's chain of frames, as far as it was read.
type run struct {
	src, id string
	// next is the fseq the next frame must carry, hash the hash of the
	// last frame read (the next one's prev).
	next uint64
	hash string
	// last is the latest time a frame of the run covers.
	last time.Time
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
	switch {
	case r == nil:
		r = &run{src: h.Src, id: h.Run}
		c.runs[key] = r
		c.sum.Runs++
		if h.FSeq == 0 {
			if h.Prev != events.FrameGenesis(h.Run) {
				c.frameDefect(seq, f, "is its run's first frame but its prev is not the run's genesis: a frame was inserted")
			}
		} else if !c.o.AllowHead {
			c.frameDefect(seq, f, fmt.Sprintf("is the first frame read of its run: frames fseq 0 to %d are missing", h.FSeq-1))
		}
	case h.FSeq > r.next:
		c.frameDefect(seq, f, fmt.Sprintf("follows fseq %d: frames fseq %d to %d of the run are missing", r.next-1, r.next, h.FSeq-1))
	case h.FSeq < r.next:
		c.frameDefect(seq, f, fmt.Sprintf("comes after fseq %d: a frame repeated, reordered or inserted", r.next-1))
	case h.Prev != r.hash:
		c.frameDefect(seq, f, fmt.Sprintf("prev does not match the hash of fseq %d: a frame was changed, replaced or inserted", h.FSeq-1))
	}
	if h.FSeq >= r.next {
		r.next, r.hash = h.FSeq+1, hash
	}
	if h.Last.After(r.last) {
		r.last = h.Last
	}

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
		c.frameDefect(seq, f, "is not signed")
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
	if !first.Equal(h.First) || !last.Equal(h.Last) {
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
