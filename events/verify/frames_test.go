package verify

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// trail is two sessions of 6 events, interleaved, and a login, in frames
// of 4 events from one writer run: 13 events, 4 frames.
func trail(t *testing.T, ca *testCA) (evs [][]byte, msgs [][]byte) {
	t.Helper()
	a := chainedSession(t, ca.signer, "SA", 6, t0, "")
	b := chainedSession(t, ca.signer, "SB", 6, t0.Add(time.Second), "")
	for i := range a {
		evs = append(evs, a[i], b[i])
	}
	evs = append(evs, fmt.Appendf(nil, `{"id":"login-1","type":"user.login","time":%q}`, t0.Add(2*time.Second).Format(time.RFC3339Nano)))
	return evs, frames(t, ca.signer, "h1", "r1", evs, 4)
}

func TestFramesIntact(t *testing.T) {
	ca := newTestCA(t, "good")
	_, msgs := trail(t, ca)
	s := checkMessages(Options{HostCA: ca.cert, Strict: true}, msgs)
	if !s.Intact() {
		t.Fatalf("%s\n%s", s.Line(), defectLines(s))
	}
	if s.Events != 13 || s.Frames != 4 || s.Runs != 1 || s.Sealed != 2 || s.Ended != 2 || s.Unsigned != 0 || s.Unchecked != 0 {
		t.Fatalf("%+v", s)
	}
	if want := "intact: 13 events, 2 sessions (2 ended, 2 sealed, 0 open), 4 frames from 1 writer runs, stream sequences 1 to 4"; s.Line() != want {
		t.Fatalf("%q, want %q", s.Line(), want)
	}
	// Without the host CA the chains are still checked; the signatures
	// are counted, not trusted.
	s = checkMessages(Options{}, msgs)
	if !s.Intact() || s.Unchecked != 4+2 || s.Sealed != 0 {
		t.Fatalf("%+v", s)
	}
	// One session alone: every frame is still checked.
	s = checkMessages(Options{HostCA: ca.cert, SID: "SB"}, msgs)
	if !s.Intact() || s.Sessions != 1 || s.Events != 6 || s.Frames != 4 {
		t.Fatalf("%+v", s)
	}
}

// A writer idle with an unsigned tail signs it with a frame without
// events (a checkpoint) whose header carries the time it was cut.
func TestCheckpointFrameIntact(t *testing.T) {
	ca := newTestCA(t, "good")
	_, msgs := trail(t, ca)
	last, err := events.DecodeFrame(msgs[len(msgs)-1])
	if err != nil {
		t.Fatal(err)
	}
	at := t0.Add(3 * time.Second)
	cp, _, err := events.EncodeFrame(nil, events.FrameHeader{ID: "CP", Src: "h1", Run: "r1", FSeq: 4, Prev: last.Hash(), First: at, Last: at}, nil, ca.signer)
	if err != nil {
		t.Fatal(err)
	}
	s := checkMessages(Options{HostCA: ca.cert, Strict: true}, append(msgs, cp))
	if !s.Intact() || s.Frames != 5 || s.Events != 13 {
		t.Fatalf("%s\n%s", s.Line(), defectLines(s))
	}
	bad, _, err := events.EncodeFrame(nil, events.FrameHeader{ID: "CP", Src: "h1", Run: "r1", FSeq: 4, Prev: last.Hash(), First: at, Last: at.Add(time.Second)}, nil, ca.signer)
	if err != nil {
		t.Fatal(err)
	}
	if s := checkMessages(Options{HostCA: ca.cert}, append(msgs, bad)); s.Intact() || !strings.Contains(defectLines(s), "frame CP") {
		t.Fatalf("a checkpoint spanning two times passed: %s\n%s", s.Line(), defectLines(s))
	}
}

func TestFrameDefectsNamed(t *testing.T) {
	ca := newTestCA(t, "good")
	rogue := newTestCA(t, "rogue")
	evs, msgs := trail(t, ca)
	frameAt := func(i int) *events.Frame {
		f, err := events.DecodeFrame(msgs[i])
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name string
		edit func([][]byte) [][]byte
		want []string
	}{
		{"signed by a key the host CA never certified", func(m [][]byte) [][]byte {
			m[1] = frames(t, rogue.signer, "h1", "r1", evs, 4)[1]
			return m
		}, []string{"frame F-r1-1 (writer h1 run r1 fseq 1)", "not certified by the host CA", "SA-2 SB-2 SA-3 SB-3"}},
		{"forged frame appended with a rogue key", func(m [][]byte) [][]byte {
			f3 := frameAt(3)
			forged := chainedSession(t, rogue.signer, "SX", 2, t0, "")
			return append(m, rawFrame(t, rogue.signer, events.FrameHeader{ID: "FORGED", Src: "h1", Run: "r1", FSeq: 4, Prev: f3.Hash(),
				N: 2, First: t0, Last: t0.Add(time.Millisecond), SIDs: []string{"SX"}}, forged))
		}, []string{"frame FORGED", "not certified", "SX-0 SX-1"}},
		{"a byte of a statement changed", func(m [][]byte) [][]byte {
			m[2] = bytes.Replace(m[2], []byte(`"SA-4","type":"db.session.query","code":"TGDB002I"`), []byte(`"SA-4","type":"db.session.query","code":"TGDB002X"`), 1)
			return m
		}, []string{"frame F-r1-2", "does not verify", "the frame was changed after it was signed"}},
		{"frame deleted", func(m [][]byte) [][]byte { return slices.Delete(m, 1, 2) },
			[]string{"frame F-r1-2", "frames fseq 1 to 1 of the run are missing"}},
		{"frame stored twice", func(m [][]byte) [][]byte { return append(m, m[1]) },
			[]string{"frame F-r1-1", "is stored twice (first at seq 2)"}},
		{"a frame inserted with the fseq of another", func(m [][]byte) [][]byte {
			f := frameAt(1)
			h := *f.Header
			h.ID, h.N = "OTHER", 2
			return append(m, rawFrame(t, ca.signer, h, f.Events[:2]))
		}, []string{"frame OTHER", "has the fseq of the frame at seq 2"}},
		{"frame replaced by one signed by the writer's key", func(m [][]byte) [][]byte {
			f := frameAt(1)
			m[1] = rawFrame(t, ca.signer, *f.Header, [][]byte{f.Events[0], f.Events[1], f.Events[3], f.Events[2]})
			return m
		}, []string{"frame F-r1-2", "prev does not match the hash of fseq 1"}},
		{"first frame of a run inserted", func(m [][]byte) [][]byte {
			return append([][]byte{rawFrame(t, ca.signer, events.FrameHeader{ID: "EARLY", Src: "h2", Run: "r2", FSeq: 0, Prev: "x"}, nil)}, m...)
		}, []string{"frame EARLY", "its prev is not the run's genesis"}},
		{"run's head missing", func(m [][]byte) [][]byte { return m[1:] },
			[]string{"frame F-r1-1", "frames fseq 0 to 0 are missing"}},
		{"header names other sessions", func(m [][]byte) [][]byte {
			f := frameAt(0)
			h := *f.Header
			h.SIDs = []string{"SA"}
			m[0] = rawFrame(t, ca.signer, h, f.Events)
			return m
		}, []string{"frame F-r1-0", "header names sessions [SA]"}},
		{"header time span false", func(m [][]byte) [][]byte {
			f := frameAt(0)
			h := *f.Header
			h.Last = h.Last.Add(time.Hour)
			m[0] = rawFrame(t, ca.signer, h, f.Events)
			return m
		}, []string{"frame F-r1-0", "header says its events span"}},
		{"unsigned tail of a run the store went on past", func(m [][]byte) [][]byte {
			f := frameAt(3)
			m[3] = m[3][:len(f.Signed)]
			// Another writer stores frames for an hour after it.
			later := chainedSession(t, ca.signer, "SL", 2, t0.Add(time.Hour), "")
			return append(m, frames(t, ca.signer, "h2", "r2", later, 4)...)
		}, []string{"frame F-r1-3", "signed by no frame", "login-1"}},
		{"unreadable frame", func(m [][]byte) [][]byte {
			m[0] = bytes.Replace(m[0], []byte(`"n":4`), []byte(`"n":5`), 1)
			return m
		}, []string{"seq 1", "unreadable frame", "holds 4 events, its header says 5"}},
		{"message removed from the stream", func(m [][]byte) [][]byte { return m }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, msgs = trail(t, ca)
			m := tc.edit(slices.Clone(msgs))
			if tc.want == nil {
				// A hole in the stream's sequence, frames themselves whole.
				c := New(Options{Sequenced: true, HostCA: ca.cert})
				c.Add(1, m[0])
				c.Add(3, m[1])
				s := c.Finish()
				mustFind(t, s, "seq 3", "stream sequences 2 to 2 are missing")
				return
			}
			mustFind(t, checkMessages(Options{HostCA: ca.cert, TruncatedAfter: time.Minute}, m), tc.want...)
		})
	}
}

// A frame whose signature verifies but whose signer certificate was not
// valid when it was written.
func TestFrameSignedOutsideValidity(t *testing.T) {
	ca := newTestCA(t, "good")
	evs := chainedSession(t, ca.signer, "SL", 3, t0.Add(13*time.Hour), "")
	s := checkMessages(Options{HostCA: ca.cert}, frames(t, ca.signer, "h1", "r1", evs, 4))
	mustFind(t, s, "frame F-r1-0", "not certified by the host CA")
	mustFind(t, s, "event SL-2", "seal not trusted")
}

// A writer signs at most every few milliseconds under load: a frame
// without a signature is proven by the next signed frame of its run, which
// chains to it; the same frame at the end of a live run awaits its
// signature (not a defect), at the end of a run the store went on past is
// one, and under Strict always.
func TestUnsignedFramesCoveredByLaterSignature(t *testing.T) {
	ca := newTestCA(t, "good")
	_, msgs := trail(t, ca)
	for _, i := range []int{0, 1, 2} {
		f, err := events.DecodeFrame(msgs[i])
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = msgs[i][:len(f.Signed)]
	}
	if s := checkMessages(Options{HostCA: ca.cert, Strict: true, TruncatedAfter: time.Minute}, msgs); !s.Intact() {
		t.Fatalf("%s\n%s", s.Line(), defectLines(s))
	}
	f, err := events.DecodeFrame(msgs[3])
	if err != nil {
		t.Fatal(err)
	}
	msgs[3] = msgs[3][:len(f.Signed)]
	s := checkMessages(Options{HostCA: ca.cert, TruncatedAfter: time.Minute}, msgs)
	if !s.Intact() || s.UnsignedTail != 4 || !strings.Contains(s.Line(), "4 frames of live runs awaiting their signature") {
		t.Fatalf("%s\n%s", s.Line(), defectLines(s))
	}
	s = checkMessages(Options{HostCA: ca.cert, Strict: true}, msgs)
	mustFind(t, s, "frame F-r1-0", "and the 3 frames after it in its run (to fseq 3) are signed by no frame")
}

// After an outage a writer resends the frames that were in flight, and
// the store may hold them out of order: the run's chain orders them.
func TestFramesStoredOutOfOrder(t *testing.T) {
	ca := newTestCA(t, "good")
	_, msgs := trail(t, ca)
	msgs[1], msgs[2] = msgs[2], msgs[1]
	if s := checkMessages(Options{HostCA: ca.cert, Strict: true}, msgs); !s.Intact() {
		t.Fatalf("%s\n%s", s.Line(), defectLines(s))
	}
}

func TestLegacyAndFramesMixed(t *testing.T) {
	ca := newTestCA(t, "good")
	_, msgs := trail(t, ca)
	legacy := wholeSession("old", 3) // single events, no chain: as before frames
	all := append(legacy, msgs...)
	s := checkMessages(Options{HostCA: ca.cert}, all)
	if !s.Intact() || s.Unsigned != 3 || s.Unchained != 1 || s.Sealed != 2 {
		t.Fatalf("%s\n%s", s.Line(), defectLines(s))
	}
	if !strings.Contains(s.Line(), "3 unsigned legacy events") || !strings.Contains(s.Line(), "1 unchained") {
		t.Fatal(s.Line())
	}
	s = checkMessages(Options{HostCA: ca.cert, Strict: true}, all)
	mustFind(t, s, "seq 1", "3 events stored alone", "unsigned legacy events")
	mustFind(t, s, "session old", "not chained")
}

// The broker's trail copies every STATE event in a frame naming its STATE
// sequence: a change missing in between is named.
func TestStateCopiesGapless(t *testing.T) {
	ca := newTestCA(t, "good")
	copyOf := func(run string, fseq, stateSeq uint64, prev string) []byte {
		ev := fmt.Appendf(nil, `{"id":"u-%d","type":"user.create","time":%q}`, stateSeq, t0.Format(time.RFC3339Nano))
		return rawFrame(t, ca.signer, events.FrameHeader{ID: fmt.Sprint("C", stateSeq), Src: "broker-trail", Run: run, FSeq: fseq, Prev: prev,
			N: 1, First: t0, Last: t0, StateSeq: stateSeq}, [][]byte{ev})
	}
	var msgs [][]byte
	prev := events.FrameGenesis("t1")
	for i, ss := range []uint64{1, 2, 3, 5} {
		m := copyOf("t1", uint64(i), ss, prev)
		f, err := events.DecodeFrame(m)
		if err != nil {
			t.Fatal(err)
		}
		prev = f.Hash()
		msgs = append(msgs, m)
	}
	s := checkMessages(Options{HostCA: ca.cert}, msgs[:3])
	if !s.Intact() || s.StateCopies != 3 || !strings.Contains(s.Line(), "3 STATE changes") {
		t.Fatalf("%s\n%s", s.Line(), defectLines(s))
	}
	mustFind(t, checkMessages(Options{HostCA: ca.cert}, msgs), "STATE events 4 to 4 have no copy in AUDIT")
}
