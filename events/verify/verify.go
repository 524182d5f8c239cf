// Package verify checks that an audit trail is whole and unaltered: every
// session's events gapless and in order from its start to its end, each
// linked to the one before by its hash and the whole sealed by the host
// that wrote it; every frame signed by a host the host CA certified and
// linked to the frame its writer stored before; no event stored twice, no
// hole in the stream's sequence. It reads events as stored (a live AUDIT
// stream of frames, or of single events as older versions stored them) or
// as an exporter delivered them (JSON lines). schemas/integrity.md is the
// model it checks.
package verify

import (
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// Event types the checker gives a meaning to.
const (
	typeStart = "db.session.start"
	typeEnd   = "db.session.end"
)

// Defect is one way the trail is not whole.
type Defect struct {
	// Seq is the stream sequence where it was found (0 in a file).
	Seq uint64
	// Frame names the frame it concerns: id, writer, run and fseq.
	Frame   string
	EventID string
	SID     string
	What    string
}

func (d Defect) String() string {
	var b strings.Builder
	if d.Seq > 0 {
		fmt.Fprintf(&b, "seq %d ", d.Seq)
	}
	if d.Frame != "" {
		fmt.Fprintf(&b, "frame %s ", d.Frame)
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
	// Refused are sessions refused before they began: no end, no seal.
	Refused int
	// Open are sessions with no end event: still live, or cut short.
	Open []string
	// Partial are sessions whose start is not in what was read (older
	// than the stream's retention or than --since).
	Partial           int
	FirstSeq, LastSeq uint64
	// Frames are the frames read; Runs the writer runs they came from.
	Frames, Runs int
	// Sealed are ended sessions whose seal verified; Unchained sessions
	// whose events carry no prev (written before chains).
	Sealed, Unchained int
	// Unsigned are events stored alone rather than in a frame (as before
	// frames): no signature covers them.
	Unsigned int
	// Unchecked counts signatures and seals not checked: no host CA.
	Unchecked int
	// StateCopies counts the broker trail's copies of STATE events.
	StateCopies int
	// UnsignedTail counts frames at the end of a live writer run that no
	// signature covers yet (a writer signs an idle run's tail at once).
	UnsignedTail int
	Defects      []Defect
}

// Intact reports whether no defect was found.
func (s Summary) Intact() bool { return len(s.Defects) == 0 }

// Options shape a Checker.
type Options struct {
	// Sequenced says the messages come from a stream read without a
	// subject filter, so consecutive sequences must follow each other.
	Sequenced bool
	// AllowHead says a session, or a writer's run of frames, may begin
	// after its first event or frame without a defect: the read began
	// after the stream's first message (retention, --since).
	AllowHead bool
	// Duplicates says an event may come more than once (an exporter's
	// copy is delivered at least once); otherwise a second copy is a
	// defect.
	Duplicates bool
	// HostCA is the trust anchor of frame signatures and session seals;
	// without it they are counted as not checked.
	HostCA *x509.Certificate
	// Strict makes defects of what cannot be proven: events stored alone
	// (unsigned), sessions without chain, and sessions without their end
	// (so without a seal).
	Strict bool
	// TruncatedAfter, when set, makes a defect of an open session whose
	// writer's run went on storing frames for longer than this after the
	// session's last event: an end that should have been written was not
	// (or was removed). A session idle for that long looks the same.
	TruncatedAfter time.Duration
	// SID, when set, checks only this session's events (frames are all
	// checked: they are what proves nothing was removed).
	SID string
}

// Checker takes AUDIT messages or exported events one at a time, in
// stream order.
type Checker struct {
	o        Options
	sessions map[string]*session
	ids      map[string]uint64
	runs     map[string]*run
	// stateSeqs are the STATE sequences of the trail's copies read.
	stateSeqs []uint64
	// latest is the latest time any frame read covers: how far the store
	// went on.
	latest  time.Time
	signers *signers
	pool    *sigPool
	// firstUnsigned is the sequence of the first event stored alone.
	firstUnsigned uint64
	sum           Summary
}

// session collects what a session's events say. Its events may be stored
// out of ei order (a retried publish, a result stored by the background
// path after the next statement): order and chain are checked by ei, at
// Finish.
type session struct {
	evs     []sev
	startEI uint64
	started bool
	// refused: the session was refused before it began (its start says
	// so, or its first event is not a start: a malformed startup); it
	// has no end and no seal.
	refused bool
	endEI   uint64
	ended   bool
	sealed  bool
	// hasSeal: the end event carries a seal (verified or not).
	hasSeal  bool
	chained  bool
	firstSeq uint64
	// last is the time of the session's latest event read in a frame,
	// run the writer run of that frame.
	run  *run
	last time.Time
}

// sev is what the chain check needs of one event.
type sev struct {
	ei      uint64
	id      string
	seq     uint64
	prev    [sha256.Size]byte
	hash    [sha256.Size]byte
	hasPrev bool
	prevBad bool
}

// New returns an empty Checker.
func New(o Options) *Checker {
	return &Checker{o: o, sessions: map[string]*session{}, ids: map[string]uint64{}, runs: map[string]*run{}, signers: newSigners(o.HostCA)}
}

// fields are what the checker reads of an event.
type fields struct {
	ID, Type, SID string
	EI            *uint64
	// Time and Signer are slices of the event (unparsed); At is Time
	// parsed, for events read in a frame.
	Time, Signer []byte
	At           time.Time
	Prev         [sha256.Size]byte
	HasPrev      bool
	PrevBad      bool
	HasSeal      bool
	// Failed: the event says "success": false.
	Failed bool
}

func (c *Checker) defect(seq uint64, id, sid, format string, args ...any) {
	c.sum.Defects = append(c.sum.Defects, Defect{Seq: seq, EventID: id, SID: sid, What: fmt.Sprintf(format, args...)})
}

// Add checks one AUDIT message stored at stream sequence seq (0 when
// unknown): a frame, or one event stored alone.
func (c *Checker) Add(seq uint64, data []byte) {
	if seq > 0 {
		if c.o.Sequenced && c.sum.LastSeq > 0 && seq != c.sum.LastSeq+1 {
			c.defect(seq, "", "", "stream sequences %d to %d are missing: messages removed from the stream", c.sum.LastSeq+1, seq-1)
		}
		if c.sum.FirstSeq == 0 {
			c.sum.FirstSeq = seq
		}
		c.sum.LastSeq = seq
	}
	if events.IsFrame(data) {
		c.addFrame(seq, data)
		return
	}
	if _, ok := c.addEvent(seq, data, nil); ok {
		c.sum.Unsigned++
		if c.firstUnsigned == 0 {
			c.firstUnsigned = max(seq, 1)
		}
	}
}

// AddEvent checks one event as an exporter delivered it: not in a frame,
// so only its session's chain and seal vouch for it.
func (c *Checker) AddEvent(ev []byte) { c.addEvent(0, ev, nil) }

// addEvent checks one event; fr is the frame holding it, nil for an event
// on its own. It returns what it read of the event, and false when the
// event was not counted (unreadable, a copy, another session's).
func (c *Checker) addEvent(seq uint64, data []byte, fr *frameRead) (fields, bool) {
	f, err := scanFields(data)
	if err != nil {
		c.defect(seq, "", "", "not a JSON event: %v", err)
		return f, false
	}
	if f.ID == "" || f.Type == "" {
		c.defect(seq, f.ID, f.SID, "event without id or type")
		return f, false
	}
	if fr != nil {
		// A frame's header is checked against its events' times.
		f.At, _ = time.Parse(time.RFC3339Nano, string(f.Time))
	}
	if c.o.SID != "" && f.SID != c.o.SID {
		return f, false
	}
	if first, dup := c.ids[f.ID]; dup {
		if c.o.Duplicates {
			c.sum.Duplicates++
			return f, false
		}
		c.defect(seq, f.ID, f.SID, "stored twice (first at seq %d)", first)
		return f, false
	}
	c.ids[f.ID] = seq
	c.sum.Events++
	if f.SID == "" || f.EI == nil {
		return f, true // not a session event: its frame's signature covers it
	}
	s := c.sessions[f.SID]
	if s == nil {
		s = &session{firstSeq: seq}
		c.sessions[f.SID] = s
	}
	e := sev{ei: *f.EI, id: f.ID, seq: seq, prev: f.Prev, hasPrev: f.HasPrev, prevBad: f.PrevBad}
	if f.HasPrev {
		s.chained = true
	}
	hashed := data
	if f.HasSeal || len(f.Signer) > 0 {
		hashed = c.checkSeal(seq, data, &f, s)
	}
	e.hash = sha256.Sum256(hashed)
	s.evs = append(s.evs, e)
	if fr != nil {
		// The time of the session's latest event written in a frame,
		// and the run that wrote it: what TruncatedAfter measures from.
		if !f.At.IsZero() && (s.run == nil || f.At.After(s.last)) {
			s.run, s.last = fr.run, f.At
		}
	}
	switch f.Type {
	case typeStart:
		s.started, s.startEI = true, *f.EI
		s.refused = s.refused || f.Failed
	case typeEnd:
		if s.ended {
			c.defect(seq, f.ID, f.SID, "a second %s", typeEnd)
		}
		s.ended, s.endEI = true, *f.EI
		s.hasSeal = f.HasSeal || len(f.Signer) > 0
	default:
		if *f.EI == 0 {
			// A session whose first event is not its start was refused
			// at the door (a malformed startup recorded in a session of
			// its own).
			s.refused = true
		}
	}
	return f, true
}

// checkSeal verifies a session's seal (on its end event) and returns the
// bytes the event's hash covers: the event without its seal.
func (c *Checker) checkSeal(seq uint64, data []byte, f *fields, s *session) []byte {
	unsealed, seal := events.Unsealed(data)
	switch {
	case !f.HasSeal:
		c.defect(seq, f.ID, f.SID, "signer without seal: the session's seal was removed")
	case seal == "":
		c.defect(seq, f.ID, f.SID, "seal is not the event's last member: the sealed bytes cannot be found")
	case len(f.Signer) == 0:
		c.defect(seq, f.ID, f.SID, "seal without signer")
	case c.signers.root == nil:
		c.sum.Unchecked++
	default:
		at, err := time.Parse(time.RFC3339Nano, string(f.Time))
		if err != nil {
			c.defect(seq, f.ID, f.SID, "sealed event without a valid time: %v", err)
			break
		}
		cert, err := c.signers.get(f.Signer, at)
		if err != nil {
			c.defect(seq, f.ID, f.SID, "seal not trusted: %v", err)
			break
		}
		id, sid := f.ID, f.SID
		c.verifyLater(&sigCheck{cert: cert, data: unsealed, sig: seal, done: func(err error) {
			if err != nil {
				c.defect(seq, id, sid, "seal by %q does not verify (%v): the event was changed after it was sealed", cert.Subject.CommonName, err)
				return
			}
			s.sealed = true
		}})
	}
	return unsealed
}
