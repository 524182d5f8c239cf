package verify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// checkEvents runs a Checker over exported events, as --file does.
func checkEvents(o Options, evs [][]byte) Summary {
	o.Duplicates = true
	c := New(o)
	for _, e := range evs {
		c.AddEvent(e)
	}
	return c.Finish()
}

func TestChainIntact(t *testing.T) {
	ca := newTestCA(t, "good")
	evs := chainedSession(t, ca.signer, "S1", 5, t0, "")
	s := checkEvents(Options{HostCA: ca.cert, Strict: true}, evs)
	if !s.Intact() || s.Sealed != 1 || s.Unchained != 0 || s.Unsigned != 0 {
		t.Fatalf("%s\n%s", s.Line(), defectLines(s))
	}
	// Out of ei order (a result stored after the next statement) is fine.
	evs[1], evs[2] = evs[2], evs[1]
	if s := checkEvents(Options{HostCA: ca.cert}, evs); !s.Intact() {
		t.Fatalf("%s\n%s", s.Line(), defectLines(s))
	}
	// Without the host CA the seal is counted, not trusted.
	if s := checkEvents(Options{}, evs); !s.Intact() || s.Unchecked != 1 || s.Sealed != 0 {
		t.Fatalf("%+v", s)
	}
}

func TestChainDefectsNamed(t *testing.T) {
	ca := newTestCA(t, "good")
	rogue := newTestCA(t, "rogue")
	// reseal rebuilds the end event from e with a new seal by s.
	reseal := func(e []byte, s *events.Signer) []byte {
		u, _ := events.Unsealed(e)
		i := bytes.LastIndex(u, []byte(`,"signer":`))
		return seal(t, s, u[:i])
	}
	for _, tc := range []struct {
		name string
		o    Options
		edit func([][]byte) [][]byte
		want []string
	}{
		{"a byte of a statement changed", Options{}, func(e [][]byte) [][]byte {
			e[2] = bytes.Replace(e[2], []byte("TGDB002I"), []byte("TGDB002J"), 1)
			return e
		}, []string{"event S1-3", "ei 3: prev matches no event of the session: the event before it (ei 2, event S1-2) was changed or removed"}},
		{"event replaced with its ei and prev kept", Options{}, func(e [][]byte) [][]byte {
			e[1] = bytes.Replace(e[1], []byte(`"id":"S1-1"`), []byte(`"id":"FORGED"`), 1)
			return e
		}, []string{"event S1-2", "ei 2: prev matches no event of the session"}},
		{"first event replaced", Options{}, func(e [][]byte) [][]byte {
			e[0] = chainedSession(t, ca.signer, "S0", 1, t0, "")[0]
			e[0] = bytes.ReplaceAll(e[0], []byte(`S0`), []byte(`S1`))
			return e
		}, []string{"event S1-0", "prev is not the session's genesis"}},
		{"event removed", Options{}, func(e [][]byte) [][]byte { return slices.Delete(e, 2, 3) },
			[]string{"session S1", "ei 2 to 2 are missing"}},
		{"end changed after sealing", Options{HostCA: ca.cert}, func(e [][]byte) [][]byte {
			e[4] = bytes.Replace(e[4], []byte("TGDB002I"), []byte("TGDB002J"), 1)
			return e
		}, []string{"event S1-4", "does not verify", "changed after it was sealed"}},
		{"end resealed by a key the host CA never certified", Options{HostCA: ca.cert}, func(e [][]byte) [][]byte {
			e[4] = reseal(e[4], rogue.signer)
			return e
		}, []string{"event S1-4", "seal not trusted", "rogue-agent", "not certified by the host CA"}},
		{"seal removed", Options{HostCA: ca.cert}, func(e [][]byte) [][]byte {
			u, _ := events.Unsealed(e[4])
			e[4] = append(u[:bytes.LastIndex(u, []byte(`,"signer":`))], '}')
			return e
		}, []string{"session S1", "carries no seal"}},
		{"seal kept, signer removed", Options{HostCA: ca.cert}, func(e [][]byte) [][]byte {
			e[4] = bytes.Replace(e[4], []byte(`"signer":`), []byte(`"signed":`), 1)
			return e
		}, []string{"event S1-4", "seal without signer"}},
		{"seal not last", Options{HostCA: ca.cert}, func(e [][]byte) [][]byte {
			e[4] = append(e[4][:len(e[4])-1], `,"x":1}`...)
			return e
		}, []string{"event S1-4", "seal is not the event's last member"}},
		{"event without prev in a chained session", Options{}, func(e [][]byte) [][]byte {
			e[3] = []byte(`{"id":"S1-3","type":"db.session.query","time":"2026-01-01T00:00:00Z","sid":"S1","ei":3}`)
			return e
		}, []string{"event S1-3", "carries no prev in a chained session"}},
		{"prev not a hash", Options{}, func(e [][]byte) [][]byte {
			e[3] = []byte(`{"id":"S1-3","type":"db.session.query","time":"2026-01-01T00:00:00Z","sid":"S1","ei":3,"prev":"abc"}`)
			return e
		}, []string{"event S1-3", "prev is not a SHA-256"}},
		{"file cut before the end (strict)", Options{Strict: true}, func(e [][]byte) [][]byte { return e[:3] },
			[]string{"event S1-2", "session S1", "open: no db.session.end after ei 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs := tc.edit(chainedSession(t, ca.signer, "S1", 5, t0, ""))
			mustFind(t, checkEvents(tc.o, evs), tc.want...)
		})
	}
}

// An open session is live or cut short; once its writer has gone on for
// more than TruncatedAfter without its end, it is reported truncated.
func TestTruncatedSession(t *testing.T) {
	ca := newTestCA(t, "good")
	a := chainedSession(t, ca.signer, "SA", 4, t0, "")
	b := chainedSession(t, ca.signer, "SB", 4, t0.Add(2*time.Minute), "")
	evs := append(slices.Clone(a[:3]), b...) // SA's end never stored
	msgs := frames(t, ca.signer, "h1", "r1", evs, 2)
	s := checkMessages(Options{HostCA: ca.cert, TruncatedAfter: time.Minute}, msgs)
	mustFind(t, s, "event SA-2", "session SA", "truncated: no db.session.end", "writer h1 (run r1)", "2m0s after the session's last")
	// Within the limit, or with the heuristic off, it is only open.
	for _, o := range []Options{{HostCA: ca.cert, TruncatedAfter: 5 * time.Minute}, {HostCA: ca.cert}} {
		s := checkMessages(o, msgs)
		if !s.Intact() || len(s.Open) != 1 || s.Open[0] != "SA" {
			t.Fatalf("%s\n%s", s.Line(), defectLines(s))
		}
	}
}

// An exporter's line carries the event verbatim, whatever the format: the
// bytes taken out verify as the stored event did.
func TestExportedEvent(t *testing.T) {
	ca := newTestCA(t, "good")
	evs := chainedSession(t, ca.signer, "S1", 3, t0, `select '<&>' "\u00e9"`)
	var native, ce, ocsf [][]byte
	for _, e := range evs {
		native = append(native, e)
		ce = append(ce, fmt.Appendf(nil, `{"specversion":"1.0","id":"x","source":"/tollgate/c","type":"tollgate.t","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","data":%s}`, e))
		s, err := json.Marshal(string(e))
		if err != nil {
			t.Fatal(err)
		}
		ocsf = append(ocsf, fmt.Appendf(nil, `{"class_uid":6003,"metadata":{"uid":"x"},"unmapped":{"tollgate":{"id":"x"},"tollgate_event":%s}}`, s))
	}
	for name, lines := range map[string][][]byte{"native": native, "cloudevents": ce, "ocsf": ocsf} {
		var got [][]byte
		for _, l := range lines {
			ev, err := ExportedEvent(append(l, '\n'))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			got = append(got, ev)
		}
		if !slices.EqualFunc(got, evs, bytes.Equal) {
			t.Fatalf("%s: %q", name, got)
		}
		if s := checkEvents(Options{HostCA: ca.cert, Strict: true}, got); !s.Intact() || s.Sealed != 1 {
			t.Fatalf("%s: %s\n%s", name, s.Line(), defectLines(s))
		}
	}
	if _, err := ExportedEvent([]byte(`{"class_uid":6003,"unmapped":{"tollgate":{"id":"x"}}}`)); err == nil {
		t.Fatal("OCSF record without the original event accepted")
	}
	if _, err := ExportedEvent([]byte(`{"specversion":"1.0","id":"x"}`)); err == nil {
		t.Fatal("CloudEvent without data accepted")
	}
}

// Sessions refused before they began have no end and no seal: a denied
// start, or a malformed startup recorded at ei 0. They are counted as
// refused, not open, and never called truncated, whatever else the writer
// stored after them.
func TestRefusedSessionsAreNotOpen(t *testing.T) {
	ca := newTestCA(t, "good")
	denied := fmt.Appendf(nil, `{"id":"D-0","type":"db.session.start","time":%q,"sid":"D","ei":0,"prev":%q,"success":false,"error":"denied"}`,
		t0.Format(time.RFC3339Nano), events.ChainGenesis("D"))
	malformed := fmt.Appendf(nil, `{"id":"M-0","type":"db.session.malformed_packet","time":%q,"sid":"M","ei":0,"prev":%q}`,
		t0.Format(time.RFC3339Nano), events.ChainGenesis("M"))
	later := chainedSession(t, ca.signer, "L", 3, t0.Add(time.Hour), "")
	msgs := frames(t, ca.signer, "h1", "r1", append([][]byte{denied, malformed}, later...), 2)
	s := checkMessages(Options{HostCA: ca.cert, TruncatedAfter: time.Minute, Strict: true}, msgs)
	if !s.Intact() || s.Refused != 2 || len(s.Open) != 0 || !strings.Contains(s.Line(), "2 refused before they began") {
		t.Fatalf("%s\n%s", s.Line(), defectLines(s))
	}
}
