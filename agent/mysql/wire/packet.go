package wire

import (
	"fmt"
	"io"
)

// MaxChunk is the largest payload one packet can carry (2^24-1). A payload
// of MaxChunk bytes or more is sent as several packets: chunks of exactly
// MaxChunk bytes followed by one shorter chunk, possibly empty.
const MaxChunk = 0xffffff

// DefaultMaxPayload is the payload limit NewReader uses when given 0: the
// default max_allowed_packet of MySQL 8 and MariaDB (64 MiB).
const DefaultMaxPayload = 64 << 20

// retainLimit: a Reader keeps a buffer of at most this size between packets,
// so one huge packet does not pin its memory for the life of the connection.
const retainLimit = 1 << 20

// Reader reads packets: int<3> payload_length, int<1> sequence_id, payload.
// It reassembles payloads split over several packets, enforces a maximum
// payload size and checks that sequence ids follow each other.
//
// The Reader reads exactly the bytes of each packet and never ahead, so after
// an SSLRequest the caller may start TLS on the same connection. Give it a
// *bufio.Reader for fewer system calls where that does not matter.
type Reader struct {
	r          io.Reader
	maxPayload int
	seq        uint8
	hdr        [4]byte
	buf        []byte
}

// NewReader returns a Reader of r that refuses payloads longer than
// maxPayload bytes (DefaultMaxPayload if maxPayload <= 0). The first
// packet expected has sequence id 0.
func NewReader(r io.Reader, maxPayload int) *Reader {
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	return &Reader{r: r, maxPayload: maxPayload}
}

// Reset makes the Reader read from r, keeping its limit and sequence id
// (used when a connection switches to TLS).
func (r *Reader) Reset(rd io.Reader) { r.r = rd }

// Seq returns the sequence id the next packet must carry.
func (r *Reader) Seq() uint8 { return r.seq }

// SetSeq sets the sequence id the next packet must carry. A new command
// starts at 0; the reply to a packet written with id n starts at n+1.
func (r *Reader) SetSeq(seq uint8) { r.seq = seq }

// MaxPayload returns the payload limit.
func (r *Reader) MaxPayload() int { return r.maxPayload }

// ReadPacket reads one logical packet and returns its payload. The payload
// is valid until the next call. At a clean end of stream before a packet
// begins it returns io.EOF; a stream cut inside a packet gives an error
// wrapping io.ErrUnexpectedEOF. A payload over the limit gives
// *PacketTooLargeError before its body is read; a wrong sequence id gives
// *SequenceError, after which Seq is the id that follows the stray one (an
// ERR answering it carries that). After any error the stream is out of step
// (the payload was not read): the connection must be closed.
func (r *Reader) ReadPacket() ([]byte, error) {
	if cap(r.buf) > retainLimit {
		r.buf = nil
	}
	total := 0
	for first := true; ; first = false {
		if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
			if err == io.EOF && first {
				return nil, io.EOF
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, fmt.Errorf("mysql: stream ended inside a packet header: %w", io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		n := int(r.hdr[0]) | int(r.hdr[1])<<8 | int(r.hdr[2])<<16
		if seq := r.hdr[3]; seq != r.seq {
			// An answer to the stray packet follows it, as the peer
			// that numbered it expects.
			err := &SequenceError{Expected: r.seq, Got: seq}
			r.seq = seq + 1
			return nil, err
		}
		r.seq++
		if total+n > r.maxPayload {
			return nil, &PacketTooLargeError{Declared: total + n, Limit: r.maxPayload}
		}
		if need := total + n; cap(r.buf) < need {
			nb := make([]byte, total, growCap(cap(r.buf), need))
			copy(nb, r.buf[:total])
			r.buf = nb
		}
		r.buf = r.buf[:total+n]
		if _, err := io.ReadFull(r.r, r.buf[total:]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, fmt.Errorf("mysql: stream ended inside a payload of %d bytes: %w", n, io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		total += n
		if n < MaxChunk {
			return r.buf[:total], nil
		}
	}
}

func growCap(have, need int) int {
	c := 2 * have
	if c < 512 {
		c = 512
	}
	if c < need {
		c = need
	}
	return c
}

// Writer writes payloads as packets, splitting those of MaxChunk bytes or
// more, and numbers them with consecutive sequence ids.
type Writer struct {
	w   io.Writer
	seq uint8
	buf []byte
}

// NewWriter returns a Writer to w; the first packet gets sequence id 0.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Reset makes the Writer write to w, keeping its sequence id.
func (w *Writer) Reset(wr io.Writer) { w.w = wr }

// Seq returns the sequence id the next packet will carry.
func (w *Writer) Seq() uint8 { return w.seq }

// SetSeq sets the sequence id of the next packet.
func (w *Writer) SetSeq(seq uint8) { w.seq = seq }

// WritePacket writes payload as one logical packet (one or more physical
// packets) in a single Write where it fits the Writer's buffer.
func (w *Writer) WritePacket(payload []byte) error {
	if len(payload) >= retainLimit {
		// Large payloads: write header and chunk separately rather than
		// copying megabytes into a buffer.
		for {
			n := min(len(payload), MaxChunk)
			hdr := [4]byte{byte(n), byte(n >> 8), byte(n >> 16), w.seq}
			w.seq++
			if _, err := w.w.Write(hdr[:]); err != nil {
				return err
			}
			if _, err := w.w.Write(payload[:n]); err != nil {
				return err
			}
			payload = payload[n:]
			if n < MaxChunk {
				return nil
			}
		}
	}
	w.buf, w.seq = AppendPacket(w.buf[:0], w.seq, payload)
	_, err := w.w.Write(w.buf)
	return err
}

// AppendPacket appends payload framed as packets starting at sequence id seq
// to dst, and returns the extended slice and the next sequence id. It lets a
// caller frame several packets into one buffer and send them with one write.
func AppendPacket(dst []byte, seq uint8, payload []byte) ([]byte, uint8) {
	for {
		n := min(len(payload), MaxChunk)
		dst = append(dst, byte(n), byte(n>>8), byte(n>>16), seq)
		dst = append(dst, payload[:n]...)
		seq++
		payload = payload[n:]
		if n < MaxChunk {
			return dst, seq
		}
	}
}
