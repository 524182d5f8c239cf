package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func frame(seq uint8, payload []byte) []byte {
	out, _ := AppendPacket(nil, seq, payload)
	return out
}

func TestReaderSinglePackets(t *testing.T) {
	var stream []byte
	stream = append(stream, frame(0, []byte("hello"))...)
	stream = append(stream, frame(1, nil)...)
	stream = append(stream, frame(2, []byte{0x03, 'x'})...)
	r := NewReader(bytes.NewReader(stream), 0)
	for i, want := range [][]byte{[]byte("hello"), {}, {0x03, 'x'}} {
		got, err := r.ReadPacket()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("packet %d: %q %v, want %q", i, got, err, want)
		}
	}
	if _, err := r.ReadPacket(); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}
	if r.Seq() != 3 {
		t.Errorf("next sequence id %d, want 3", r.Seq())
	}
}

func TestReaderMultiPacket(t *testing.T) {
	for _, size := range []int{MaxChunk - 1, MaxChunk, MaxChunk + 1, 2 * MaxChunk} {
		payload := bytes.Repeat([]byte{0xab}, size)
		payload[0], payload[size-1] = 1, 2
		var buf bytes.Buffer
		w := NewWriter(&buf)
		w.SetSeq(5)
		if err := w.WritePacket(payload); err != nil {
			t.Fatal(err)
		}
		wantPackets := size/MaxChunk + 1
		if buf.Len() != size+4*wantPackets {
			t.Errorf("size %d: %d bytes on the wire, want %d (%d packets)", size, buf.Len(), size+4*wantPackets, wantPackets)
		}
		if w.Seq() != uint8(5+wantPackets) {
			t.Errorf("size %d: writer seq %d", size, w.Seq())
		}
		r := NewReader(&buf, 3*MaxChunk)
		r.SetSeq(5)
		got, err := r.ReadPacket()
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("size %d: got %d bytes, %v", size, len(got), err)
		}
		if r.Seq() != w.Seq() {
			t.Errorf("size %d: reader seq %d, writer %d", size, r.Seq(), w.Seq())
		}
	}
}

func TestReaderTooLarge(t *testing.T) {
	r := NewReader(bytes.NewReader(frame(0, make([]byte, 101))), 100)
	_, err := r.ReadPacket()
	var tl *PacketTooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, ErrPacketTooLarge) || tl.Declared != 101 || tl.Limit != 100 {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), "101") || !strings.Contains(err.Error(), "100") {
		t.Errorf("message %q should name the length and the limit", err)
	}
	// The limit applies to the reassembled payload: a 0xffffff chunk
	// followed by more is refused once the sum passes the limit, before
	// the second body is read.
	hdr := []byte{0xff, 0xff, 0xff, 0}
	stream := append(append(hdr, make([]byte, MaxChunk)...), 0x10, 0, 0, 1)
	r = NewReader(bytes.NewReader(stream), MaxChunk+8)
	_, err = r.ReadPacket()
	if !errors.As(err, &tl) || tl.Declared != MaxChunk+16 {
		t.Fatalf("multi-packet over limit: %v", err)
	}
}

func TestReaderSequence(t *testing.T) {
	r := NewReader(bytes.NewReader(frame(3, []byte{1})), 0)
	_, err := r.ReadPacket()
	var se *SequenceError
	if !errors.As(err, &se) || !errors.Is(err, ErrSequence) || se.Expected != 0 || se.Got != 3 {
		t.Fatalf("got %v", err)
	}
	if err.Error() != "mysql: packet sequence id 3, expected 0" {
		t.Errorf("message %q", err)
	}
	// Sequence ids wrap around after 255.
	r = NewReader(bytes.NewReader(append(frame(255, []byte{1}), frame(0, []byte{2})...)), 0)
	r.SetSeq(255)
	for i := 0; i < 2; i++ {
		if _, err := r.ReadPacket(); err != nil {
			t.Fatalf("wrap: %v", err)
		}
	}
}

func TestReaderTruncated(t *testing.T) {
	full := frame(0, []byte("hello"))
	for _, n := range []int{1, 3, 4, 6} {
		_, err := NewReader(bytes.NewReader(full[:n]), 0).ReadPacket()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: %v, want io.ErrUnexpectedEOF", n, err)
		}
	}
}

func TestReaderBufferReuse(t *testing.T) {
	pkt := frame(0, bytes.Repeat([]byte("x"), 300))
	src := bytes.NewReader(pkt)
	r := NewReader(src, 0)
	allocs := testing.AllocsPerRun(100, func() {
		src.Reset(pkt)
		r.SetSeq(0)
		if _, err := r.ReadPacket(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("ReadPacket allocates %.1f times per packet in steady state", allocs)
	}
}

func TestWriterAppendPacket(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WritePacket([]byte{0x0e}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), []byte{1, 0, 0, 0, 0x0e}) {
		t.Errorf("wire bytes % x", buf.Bytes())
	}
	out, seq := AppendPacket(nil, 7, nil)
	if !bytes.Equal(out, []byte{0, 0, 0, 7}) || seq != 8 {
		t.Errorf("empty packet % x seq %d", out, seq)
	}
}

// After a packet with the wrong sequence id, Seq is the id that answers it.
func TestReaderSeqAfterSequenceError(t *testing.T) {
	stream, _ := AppendPacket(nil, 5, []byte{1})
	r := NewReader(bytes.NewReader(stream), 0)
	r.SetSeq(1)
	if _, err := r.ReadPacket(); !errors.Is(err, ErrSequence) {
		t.Fatalf("err %v", err)
	}
	if r.Seq() != 6 {
		t.Fatalf("Seq %d after a packet numbered 5, want 6", r.Seq())
	}
}
