package events

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/klauspost/compress/s2"
)

// frameSample is a frame as strict audit makes them under pgbench -S: n
// events alternating a 400-byte query and its result, from n/2 sessions.
func frameSample(b *testing.B, n int) [][]byte {
	b.Helper()
	var evs [][]byte
	for i := range n {
		sid := fmt.Sprintf("01JBENCHSESSION%011d", i/2)
		var ev Event = queryEvent(sid, 0)
		if i%2 == 1 {
			ev = &Result{Session: Session{SID: sid, EI: 1}, Database: Database{Service: "pg-main", Protocol: "postgres", URI: "127.0.0.1:5432", User: "app", Name: "shop"},
				Status: Status{Success: true}, CommandTag: "SELECT 1", Rows: 1, Bytes: 112, DurationNs: 180000}
		}
		if err := Stamp(ev, "bench"); err != nil {
			b.Fatal(err)
		}
		data, err := appendEvent(nil, ev)
		if err != nil {
			b.Fatal(err)
		}
		evs = append(evs, data)
	}
	return evs
}

// The alternatives the frame encoding was chosen from, measured on the
// same events: JSON lines (what frames are), a length-prefixed envelope
// of the same event bytes, and JSON lines compressed with S2. The frame's
// hashes are over the event bytes either way, so the choice is only what
// writing and reading a frame costs and how big it is stored.
func BenchmarkFrameEncoding(b *testing.B) {
	for _, n := range []int{2, 16} {
		evs := frameSample(b, n)
		h := FrameHeader{ID: "01JBENCHFRAME0000000000000", Src: "host", Run: "run", Prev: FrameGenesis("run"), FSeq: 1}
		lines, _, err := EncodeFrame(nil, h, evs, nil)
		if err != nil {
			b.Fatal(err)
		}
		prefixed := encodePrefixed(nil, evs)
		packed := s2.Encode(nil, lines)
		count := func(b *testing.B, split func() (int, error)) {
			for b.Loop() {
				got, err := split()
				if err != nil || got != n {
					b.Fatalf("%d events, %v", got, err)
				}
			}
		}
		b.Run(fmt.Sprintf("events=%d/json-lines/encode", n), func(b *testing.B) {
			buf := make([]byte, 0, 2*len(lines))
			for b.Loop() {
				_ = encodeLines(buf[:0], evs)
			}
			b.ReportMetric(float64(len(lines)), "bytes/frame")
		})
		// What the writer does per frame, its header already known.
		f, err := DecodeFrame(lines)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("events=%d/json-lines/encode-with-header-and-hash", n), func(b *testing.B) {
			buf := make([]byte, 0, 2*len(lines))
			for b.Loop() {
				_, _, _ = appendFrame(buf[:0], f.Header, evs, nil)
			}
		})
		b.Run(fmt.Sprintf("events=%d/json-lines/split", n), func(b *testing.B) {
			count(b, func() (int, error) {
				got := 0
				err := SplitEvents(lines, func([]byte) error { got++; return nil })
				return got, err
			})
		})
		b.Run(fmt.Sprintf("events=%d/length-prefixed/encode", n), func(b *testing.B) {
			buf := make([]byte, 0, 2*len(prefixed))
			for b.Loop() {
				_ = encodePrefixed(buf[:0], evs)
			}
			b.ReportMetric(float64(len(prefixed)), "bytes/frame")
		})
		b.Run(fmt.Sprintf("events=%d/length-prefixed/split", n), func(b *testing.B) {
			count(b, func() (int, error) { return splitPrefixed(prefixed) })
		})
		b.Run(fmt.Sprintf("events=%d/s2/encode", n), func(b *testing.B) {
			buf := make([]byte, s2.MaxEncodedLen(len(lines)))
			for b.Loop() {
				_ = s2.Encode(buf, lines)
			}
			b.ReportMetric(float64(len(packed)), "bytes/frame")
		})
		b.Run(fmt.Sprintf("events=%d/s2/decode+split", n), func(b *testing.B) {
			buf := make([]byte, len(lines))
			count(b, func() (int, error) {
				plain, err := s2.Decode(buf, packed)
				if err != nil {
					return 0, err
				}
				got := 0
				err = SplitEvents(plain, func([]byte) error { got++; return nil })
				return got, err
			})
		})
	}
}

// encodeLines is a frame's body without its header and trailer: each
// event and a newline.
func encodeLines(dst []byte, evs [][]byte) []byte {
	for _, ev := range evs {
		dst = append(append(dst, ev...), '\n')
	}
	return dst
}

func encodePrefixed(dst []byte, evs [][]byte) []byte {
	for _, ev := range evs {
		dst = binary.AppendUvarint(dst, uint64(len(ev)))
		dst = append(dst, ev...)
	}
	return dst
}

func splitPrefixed(data []byte) (int, error) {
	n := 0
	for len(data) > 0 {
		l, k := binary.Uvarint(data)
		if k <= 0 || uint64(len(data)-k) < l {
			return n, errors.New("truncated")
		}
		data = data[k+int(l):]
		n++
	}
	return n, nil
}
