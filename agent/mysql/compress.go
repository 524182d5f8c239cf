package mysql

import (
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// The MySQL compressed protocol (CLIENT_COMPRESS): a client that asks for
// it gets it from the agent, and the agent asks the database for it in
// turn when the database offers it. The agent inflates what it reads on
// either leg before decoding, so everything it decodes, gates and records
// is the same either way. Each compressed packet is
//
//	int<3> length of the payload as sent
//	int<1> compressed sequence id
//	int<3> length before compression, 0 when the payload is not compressed
//	payload: zlib of (or plainly) any run of ordinary packets
//
// The compressed sequence id runs independently of the packets' own: the
// client starts each command at 0 and every compressed packet after it, in
// either direction, takes the next id. On the database's leg the agent is
// the client: a write that begins a command (its first packet's own
// sequence id is 0) starts again at 0. The standard library's zlib is the
// codec; nothing else here is more than framing.

// compressHeaderLen is the compressed packet's header.
const compressHeaderLen = 7

// maxCompressed bounds one compressed packet's payload, both as sent and
// inflated: the 3-byte lengths cannot say more.
const maxCompressed = 1<<24 - 1

// minCompressLength is the size below which a payload is sent as is, as
// the server does (MIN_COMPRESS_LENGTH): zlib would not make it smaller.
const minCompressLength = 50

// errCompressed names a malformed compressed packet from the client.
var errCompressed = errors.New("malformed compressed packet")

// compressedConn is a client connection speaking the compressed protocol:
// Read returns the inflated stream of ordinary packets, Write sends what it
// is given as compressed packets.
type compressedConn struct {
	net.Conn

	// Read side, used by the client loop alone.
	hdr  [compressHeaderLen]byte
	in   []byte // payload as received
	out  []byte // inflated bytes not yet read
	zr   io.ReadCloser
	zsrc bytes.Reader

	// Write side; seq is also set by Read (mu).
	mu  sync.Mutex
	seq uint8
	// client says the agent is the client on this connection (the
	// database's leg).
	client bool
	zw     *zlib.Writer
	buf    bytes.Buffer
	pkt    []byte
}

// newCompressedConn speaks the compressed protocol on c; client is true on
// the database's leg, where the agent sends the commands.
func newCompressedConn(c net.Conn, client bool) *compressedConn {
	return &compressedConn{Conn: c, client: client}
}

func (c *compressedConn) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		if err := c.readPacket(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// readPacket reads one compressed packet into c.out.
func (c *compressedConn) readPacket() error {
	if _, err := io.ReadFull(c.Conn, c.hdr[:]); err != nil {
		return err
	}
	clen := int(c.hdr[0]) | int(c.hdr[1])<<8 | int(c.hdr[2])<<16
	seq := c.hdr[3]
	ulen := int(c.hdr[4]) | int(c.hdr[5])<<8 | int(c.hdr[6])<<16
	if cap(c.in) < clen {
		c.in = make([]byte, clen)
	}
	c.in = c.in[:clen]
	if _, err := io.ReadFull(c.Conn, c.in); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	c.mu.Lock()
	c.seq = seq + 1
	c.mu.Unlock()
	if ulen == 0 {
		c.out = c.in
		return nil
	}
	c.zsrc.Reset(c.in)
	var err error
	if c.zr == nil {
		c.zr, err = zlib.NewReader(&c.zsrc)
	} else {
		err = c.zr.(zlib.Resetter).Reset(&c.zsrc, nil)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errCompressed, err)
	}
	out := make([]byte, ulen)
	if _, err := io.ReadFull(c.zr, out); err != nil {
		return fmt.Errorf("%w: inflating %d bytes: %v", errCompressed, ulen, err)
	}
	// More than the header said is as malformed as less.
	if n, _ := c.zr.Read(c.hdr[:1]); n != 0 {
		return fmt.Errorf("%w: inflates to more than the %d bytes its header says", errCompressed, ulen)
	}
	c.out = out
	return nil
}

// Write sends b as compressed packets: one, unless b is longer than one
// may be. Writers hand it whole responses or packets, so the packets that
// travel together stay together.
func (c *compressedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client && len(b) >= 4 && b[3] == 0 {
		c.seq = 0
	}
	for sent := 0; sent < len(b); {
		chunk := b[sent:min(len(b), sent+maxCompressed)]
		if err := c.writePacket(chunk); err != nil {
			return sent, err
		}
		sent += len(chunk)
	}
	return len(b), nil
}

// writePacket sends one compressed packet holding chunk. c.mu held.
func (c *compressedConn) writePacket(chunk []byte) error {
	payload, ulen := chunk, 0
	if len(chunk) >= minCompressLength {
		c.buf.Reset()
		if c.zw == nil {
			c.zw = zlib.NewWriter(&c.buf)
		} else {
			c.zw.Reset(&c.buf)
		}
		if _, err := c.zw.Write(chunk); err != nil {
			return err
		}
		if err := c.zw.Close(); err != nil {
			return err
		}
		if c.buf.Len() < len(chunk) {
			payload, ulen = c.buf.Bytes(), len(chunk)
		}
	}
	c.pkt = append(c.pkt[:0],
		byte(len(payload)), byte(len(payload)>>8), byte(len(payload)>>16), c.seq,
		byte(ulen), byte(ulen>>8), byte(ulen>>16))
	c.pkt = append(c.pkt, payload...)
	c.seq++
	_, err := c.Conn.Write(c.pkt)
	if cap(c.pkt) > 1<<20 {
		c.pkt = nil
	}
	return err
}
