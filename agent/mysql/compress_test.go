package mysql

import (
	"bytes"
	"compress/zlib"
	"errors"
	"io"
	"net"
	"testing"
)

// compressedPacket frames payload as the client sends it: zlib when zip.
func compressedPacket(seq uint8, payload []byte, zip bool) []byte {
	body, ulen := payload, 0
	if zip {
		var b bytes.Buffer
		w := zlib.NewWriter(&b)
		_, _ = w.Write(payload)
		_ = w.Close()
		body, ulen = b.Bytes(), len(payload)
	}
	return append([]byte{byte(len(body)), byte(len(body) >> 8), byte(len(body) >> 16), seq,
		byte(ulen), byte(ulen >> 8), byte(ulen >> 16)}, body...)
}

// readAll reads what a compressedConn over data yields.
func readAll(data []byte) ([]byte, error) {
	a, b := net.Pipe()
	go func() { _, _ = a.Write(data); a.Close() }()
	c := newCompressedConn(b, false)
	return io.ReadAll(c)
}

func TestCompressedRead(t *testing.T) {
	query := []byte("\x0c\x00\x00\x00\x03SELECT 1234")
	long := bytes.Repeat([]byte("abc"), 1000)
	in := append(compressedPacket(0, query, false), compressedPacket(1, long, true)...)
	got, err := readAll(in)
	if err != nil || !bytes.Equal(got, append(append([]byte{}, query...), long...)) {
		t.Fatalf("%v: %q", err, got)
	}
	for name, data := range map[string][]byte{
		"not zlib":            append([]byte{5, 0, 0, 0, 10, 0, 0}, "hello"...),
		"inflates to less":    func() []byte { p := compressedPacket(0, long, true); p[4]++; return p }(),
		"inflates to more":    func() []byte { p := compressedPacket(0, long, true); p[4]--; return p }(),
		"truncated payload":   compressedPacket(0, long, true)[:20],
		"truncated in header": {3, 0, 0},
	} {
		_, err := readAll(data)
		switch name {
		case "truncated payload":
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s: %v", name, err)
			}
		case "truncated in header":
			if err == nil {
				t.Errorf("%s: no error", name)
			}
		default:
			if !errors.Is(err, errCompressed) {
				t.Errorf("%s: %v, want a malformed compressed packet", name, err)
			}
		}
	}
}

// What the agent writes reads back as the client would: small payloads as
// is, large ones deflated, sequence ids following the client's last.
func TestCompressedWrite(t *testing.T) {
	a, b := net.Pipe()
	c := newCompressedConn(a, false)
	go func() { _, _ = b.Write(compressedPacket(4, []byte("\x01\x00\x00\x00\x0e"), false)) }()
	buf := make([]byte, 16)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	small, large := []byte("\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"), bytes.Repeat([]byte("row data "), 500)
	go func() {
		_, _ = c.Write(small)
		_, _ = c.Write(large)
		a.Close()
	}()
	raw, _ := io.ReadAll(b)
	if raw[3] != 5 || raw[4] != 0 || !bytes.Equal(raw[7:7+len(small)], small) {
		t.Fatalf("small packet %x", raw[:7+len(small)])
	}
	rest := raw[7+len(small):]
	clen := int(rest[0]) | int(rest[1])<<8 | int(rest[2])<<16
	ulen := int(rest[4]) | int(rest[5])<<8 | int(rest[6])<<16
	if rest[3] != 6 || ulen != len(large) || clen >= ulen {
		t.Fatalf("large packet: seq %d, %d bytes for %d", rest[3], clen, ulen)
	}
	zr, err := zlib.NewReader(bytes.NewReader(rest[7 : 7+clen]))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(zr); !bytes.Equal(got, large) {
		t.Fatal("large packet does not inflate to what was written")
	}
}

// FuzzCompressedRead: whatever a client sends, the reader returns bytes or
// an error, never more than a packet's worth per header and never panics.
func FuzzCompressedRead(f *testing.F) {
	f.Add(compressedPacket(0, []byte("\x05\x00\x00\x00\x03SELECT"), false))
	f.Add(compressedPacket(0, bytes.Repeat([]byte("abc"), 100), true))
	f.Add([]byte{1, 0, 0, 0, 200, 0, 0, 0x78})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, _ := readAll(data)
		if len(got) > 64*(len(data)+1)*1024 {
			t.Fatalf("%d bytes from %d", len(got), len(data))
		}
	})
}
