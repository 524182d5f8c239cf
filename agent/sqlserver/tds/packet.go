// Package tds is a codec for Microsoft's Tabular Data Stream protocol
// (MS-TDS, versions 7.1 to 7.4) as SQL Server speaks it: packet framing and
// message reassembly, PRELOGIN, LOGIN7, ALL_HEADERS, SQL batches, RPC
// requests with typed parameters, transaction manager requests, the server's
// token stream (scanned incrementally, rows skipped by type) and encoders for
// the tokens a server sends. It is strict: anything a SQL Server would refuse
// is an error that says what was wrong, so that a proxy never forwards bytes
// it could not decode.
package tds

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Packet types (MS-TDS 2.2.3.1.1).
const (
	PacketSQLBatch     byte = 0x01
	PacketPreTDS7Login byte = 0x02
	PacketRPC          byte = 0x03
	PacketReply        byte = 0x04
	PacketAttention    byte = 0x06
	PacketBulkLoad     byte = 0x07
	PacketFedAuthToken byte = 0x08
	PacketTransMgr     byte = 0x0E
	PacketLogin7       byte = 0x10
	PacketSSPI         byte = 0x11
	PacketPrelogin     byte = 0x12
)

// Packet status bits.
const (
	StatusEOM                     byte = 0x01
	StatusIgnore                  byte = 0x02
	StatusResetConnection         byte = 0x08
	StatusResetConnectionSkipTran byte = 0x10
	statusKnown                        = StatusEOM | StatusIgnore | StatusResetConnection | StatusResetConnectionSkipTran
)

// Packet sizes: the header, the bounds LOGIN7 may negotiate, and the size
// used before the login says otherwise.
const (
	HeaderLen         = 8
	MinPacketSize     = 512
	MaxPacketSize     = 32767
	DefaultPacketSize = 4096
)

// PacketTypeName names a packet type for messages.
func PacketTypeName(t byte) string {
	switch t {
	case PacketSQLBatch:
		return "SQLBatch"
	case PacketPreTDS7Login:
		return "pre-TDS7 login"
	case PacketRPC:
		return "RPC"
	case PacketReply:
		return "tabular result"
	case PacketAttention:
		return "Attention"
	case PacketBulkLoad:
		return "bulk load"
	case PacketFedAuthToken:
		return "federated authentication token"
	case PacketTransMgr:
		return "transaction manager request"
	case PacketLogin7:
		return "LOGIN7"
	case PacketSSPI:
		return "SSPI"
	case PacketPrelogin:
		return "PRELOGIN"
	}
	return fmt.Sprintf("type 0x%02X", t)
}

// Header is a packet header.
type Header struct {
	Type     byte
	Status   byte
	Length   uint16
	SPID     uint16
	PacketID byte
	Window   byte
}

// ProtocolError is input that does not decode. Reason says what was wrong;
// Type, Length and Prefix describe the offending packet for the audit
// record (Prefix is at most 64 bytes).
type ProtocolError struct {
	Reason string
	Type   byte
	Length int
	Prefix []byte
}

func (e *ProtocolError) Error() string { return e.Reason }

// PrefixHex is up to 64 bytes of the offending packet, hex encoded.
func (e *ProtocolError) PrefixHex() string { return hex.EncodeToString(e.Prefix) }

func protoErr(typ byte, length int, prefix []byte, format string, a ...any) *ProtocolError {
	if len(prefix) > 64 {
		prefix = prefix[:64]
	}
	return &ProtocolError{Reason: fmt.Sprintf(format, a...), Type: typ, Length: length, Prefix: append([]byte(nil), prefix...)}
}

// ParseHeader decodes and checks a packet header: a known type, known
// status bits, a length of at least the header and at most maxPacket
// (when maxPacket > 0), and a zero window.
func ParseHeader(b []byte, maxPacket int) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, protoErr(0, len(b), b, "truncated packet header: %d of %d bytes", len(b), HeaderLen)
	}
	h := Header{
		Type: b[0], Status: b[1], Length: binary.BigEndian.Uint16(b[2:]),
		SPID: binary.BigEndian.Uint16(b[4:]), PacketID: b[6], Window: b[7],
	}
	switch h.Type {
	case PacketSQLBatch, PacketRPC, PacketReply, PacketAttention, PacketBulkLoad, PacketFedAuthToken,
		PacketTransMgr, PacketLogin7, PacketSSPI, PacketPrelogin:
	case PacketPreTDS7Login:
		return h, protoErr(h.Type, int(h.Length), b[:HeaderLen], "pre-TDS 7 login packets are not supported: use TDS 7.1 or later")
	default:
		return h, protoErr(h.Type, int(h.Length), b[:HeaderLen], "unknown packet type 0x%02X", h.Type)
	}
	if h.Status&^statusKnown != 0 {
		return h, protoErr(h.Type, int(h.Length), b[:HeaderLen], "%s packet with unknown status bits 0x%02X", PacketTypeName(h.Type), h.Status)
	}
	if h.Length < HeaderLen {
		return h, protoErr(h.Type, int(h.Length), b[:HeaderLen], "%s packet length %d is shorter than its header", PacketTypeName(h.Type), h.Length)
	}
	if maxPacket > 0 && int(h.Length) > maxPacket {
		return h, protoErr(h.Type, int(h.Length), b[:HeaderLen], "%s packet length %d exceeds the negotiated packet size %d", PacketTypeName(h.Type), h.Length, maxPacket)
	}
	if h.Window != 0 {
		return h, protoErr(h.Type, int(h.Length), b[:HeaderLen], "%s packet with window %d (must be 0)", PacketTypeName(h.Type), h.Window)
	}
	return h, nil
}

// AppendHeader appends a packet header.
func AppendHeader(dst []byte, h Header) []byte {
	return append(dst, h.Type, h.Status, byte(h.Length>>8), byte(h.Length), byte(h.SPID>>8), byte(h.SPID), h.PacketID, h.Window)
}

// AppendPackets frames payload as a message of type typ in packets of at
// most packetSize bytes (DefaultPacketSize when 0), the last one with EOM.
func AppendPackets(dst []byte, typ byte, payload []byte, packetSize int, spid uint16) []byte {
	if packetSize < MinPacketSize {
		packetSize = DefaultPacketSize
	}
	room := packetSize - HeaderLen
	id := byte(1)
	for {
		n := min(len(payload), room)
		status := byte(0)
		if n == len(payload) {
			status = StatusEOM
		}
		dst = AppendHeader(dst, Header{Type: typ, Status: status, Length: uint16(HeaderLen + n), SPID: spid, PacketID: id})
		dst = append(dst, payload[:n]...)
		payload = payload[n:]
		id++
		if status == StatusEOM {
			return dst
		}
	}
}

// Message is one reassembled message: the payloads of its packets joined,
// and the packets exactly as they arrived (for forwarding unchanged).
type Message struct {
	Type byte
	// Status is the OR of every packet's status (EOM, IGNORE, reset bits).
	Status  byte
	Payload []byte
	Raw     []byte
	Packets int
}

// Ignored reports whether the sender cancelled the message by setting
// IGNORE on it: it must be dropped.
func (m *Message) Ignored() bool { return m.Status&StatusIgnore != 0 }

// Reader reassembles messages from packets. The slices of a Message stay
// valid until the next ReadMessage.
type Reader struct {
	r io.Reader
	// MaxPacket bounds every packet (the negotiated packet size); 0
	// means MaxPacketSize.
	MaxPacket int
	// MaxMessage bounds a message's payload; 0 means 64 MiB.
	MaxMessage int
	hdr        [HeaderLen]byte
	payload    []byte
	raw        []byte
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// ErrTruncated is returned (wrapped in a ProtocolError) when the stream
// ends inside a packet.
var ErrTruncated = errors.New("truncated")

// ReadMessage reads packets until one carries EOM. A packet that does not
// decode is a *ProtocolError; the end of the stream between messages is
// io.EOF.
func (r *Reader) ReadMessage() (Message, error) {
	maxPacket := r.MaxPacket
	if maxPacket <= 0 {
		maxPacket = MaxPacketSize
	}
	maxMsg := r.MaxMessage
	if maxMsg <= 0 {
		maxMsg = 64 << 20
	}
	r.payload, r.raw = r.payload[:0], r.raw[:0]
	m := Message{}
	for {
		n, err := io.ReadFull(r.r, r.hdr[:])
		if err != nil {
			if m.Packets == 0 && n == 0 && err == io.EOF {
				return m, io.EOF
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return m, protoErr(r.hdr[0], n, r.hdr[:n], "truncated packet header: the stream ended %d bytes into it", n)
			}
			return m, err
		}
		h, err := ParseHeader(r.hdr[:], maxPacket)
		if err != nil {
			return m, err
		}
		if m.Packets == 0 {
			m.Type = h.Type
		} else if h.Type != m.Type {
			return m, protoErr(h.Type, int(h.Length), r.hdr[:], "%s packet inside a %s message that has not ended", PacketTypeName(h.Type), PacketTypeName(m.Type))
		}
		body := int(h.Length) - HeaderLen
		if len(r.payload)+body > maxMsg {
			return m, protoErr(h.Type, len(r.payload)+body, r.hdr[:], "%s message exceeds %d bytes", PacketTypeName(h.Type), maxMsg)
		}
		start := len(r.raw)
		r.raw = append(r.raw, r.hdr[:]...)
		r.raw = grow(r.raw, body)
		got, err := io.ReadFull(r.r, r.raw[start+HeaderLen:])
		if err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return m, protoErr(h.Type, int(h.Length), r.raw[start:start+HeaderLen+got],
					"%s packet truncated: length %d but the stream ended after %d bytes", PacketTypeName(h.Type), h.Length, HeaderLen+got)
			}
			return m, err
		}
		r.payload = append(r.payload, r.raw[start+HeaderLen:]...)
		m.Packets++
		m.Status |= h.Status
		if h.Status&StatusEOM != 0 {
			m.Payload, m.Raw = r.payload, r.raw
			return m, nil
		}
		if h.Type == PacketAttention {
			return m, protoErr(h.Type, int(h.Length), r.hdr[:], "Attention packet without EOM")
		}
	}
}

// grow extends b by n bytes (contents unspecified).
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*cap(b)+n)
	copy(nb, b)
	return nb
}
