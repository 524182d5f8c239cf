package postgres

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/tollgate-db/tollgate/agent/redact"
	"github.com/tollgate-db/tollgate/events"
)

// serverTypes are the message types a PostgreSQL server sends; keep marks
// those whose body the audit reads.
var serverTypes, keepTypes = func() (t, k [256]bool) {
	for _, c := range []byte("RKSZTDCIENA123ntsGHWdcVv") {
		t[c] = true
	}
	for _, c := range []byte("CEZt") {
		k[c] = true
	}
	return t, k
}()

// maxKept bounds the body kept of one message the audit reads; a longer
// error message is cut, the stream is not.
const maxKept = 1 << 20

// scanState is the server stream scanner: it follows message boundaries
// across reads without copying, except the few small messages it reads.
type scanState struct {
	hdr   [headerLength]byte
	hdrN  int
	inMsg bool
	typ   byte
	// remain is what is left of the current message's body.
	remain int
	keep   bool
	body   []byte

	// Accumulated since the last completed statement.
	rows, bytes, warnings uint64
	// ready counts ReadyForQuery messages.
	ready uint64
	// lastTag is the last command tag as a string (see tagString).
	lastTag string
}

// tagString returns tag as a string, the previous one when it is the same:
// a session mostly repeats a few tags (SELECT 1), each a new string else.
func (s *scanState) tagString(tag []byte) string {
	if string(tag) != s.lastTag {
		s.lastTag = string(tag)
	}
	return s.lastTag
}

// scan consumes one chunk of the server stream.
func (p *proxy) scan(b []byte) error {
	s := &p.sc
	for len(b) > 0 {
		if !s.inMsg {
			if s.hdrN == 0 && len(b) >= headerLength {
				if err := p.startMsg(b[0], binary.BigEndian.Uint32(b[1:headerLength])); err != nil {
					return err
				}
				b = b[headerLength:]
			} else {
				k := copy(s.hdr[s.hdrN:], b)
				s.hdrN += k
				b = b[k:]
				if s.hdrN < headerLength {
					return nil
				}
				s.hdrN = 0
				if err := p.startMsg(s.hdr[0], binary.BigEndian.Uint32(s.hdr[1:])); err != nil {
					return err
				}
			}
			if s.remain == 0 {
				p.endMsg()
				continue
			}
		}
		k := min(s.remain, len(b))
		if s.keep && len(s.body) < maxKept {
			s.body = append(s.body, b[:min(k, maxKept-len(s.body))]...)
		}
		s.remain -= k
		b = b[k:]
		if s.remain == 0 {
			p.endMsg()
		}
	}
	return nil
}

func (p *proxy) startMsg(typ byte, n uint32) error {
	s := &p.sc
	if !serverTypes[typ] {
		return fmt.Errorf("unknown message type 0x%02x", typ)
	}
	if n < 4 {
		return fmt.Errorf("message %q declares length %d", typ, n)
	}
	s.typ, s.remain, s.inMsg, s.keep = typ, int(n-4), true, keepTypes[typ]
	s.body = s.body[:0]
	s.bytes += uint64(n) + 1
	if typ == 'D' {
		s.rows++
	}
	return nil
}

func (p *proxy) endMsg() {
	s := &p.sc
	s.inMsg = false
	switch s.typ {
	case 'C':
		tag := s.body
		if n := len(tag); n > 0 && tag[n-1] == 0 {
			tag = tag[:n-1]
		}
		p.copyIn.Store(false)
		p.complete(tag, true, nil)
	case 'I', 's', 'V':
		p.complete(nil, true, nil)
	case 'E':
		p.copyIn.Store(false)
		p.complete(nil, false, s.body)
	case 'N':
		s.warnings++
	case 'Z':
		if len(s.body) == 1 {
			p.txStatus.Store(uint32(s.body[0]))
		}
		s.ready++
		p.q.ready()
	case 't':
		p.q.paramDesc(parseParamDesc(s.body))
	case 'G':
		p.copyIn.Store(true)
	}
}

func parseParamDesc(b []byte) []uint32 {
	if len(b) < 2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) != 2+4*n {
		return nil
	}
	oids := make([]uint32, n)
	for i := range oids {
		oids[i] = binary.BigEndian.Uint32(b[2+4*i:])
	}
	return oids
}

// complete emits the result of one statement.
func (p *proxy) complete(tag []byte, ok bool, errBody []byte) {
	s := &p.sc
	now := time.Now()
	start, secrets := p.q.attribute(now)
	ev := &events.Result{
		Status:   events.Status{Success: ok},
		Rows:     s.rows,
		Bytes:    s.bytes,
		Warnings: s.warnings,
	}
	if !ok {
		code, sev, msg := errorFields(errBody)
		if len(secrets) > 0 {
			msg = redact.Found{Secrets: secrets}.Mask(msg)
		}
		ev.ErrorCode, ev.ErrorMessage, ev.Error = code, msg, msg
		p.Errors.Add(1)
		if sev == "FATAL" || sev == "PANIC" {
			p.SetReason("the database ended the session: " + msg)
		}
	}
	if len(tag) > 0 {
		ev.CommandTag = s.tagString(tag)
		if n, ok := tagRows(tag); ok {
			ev.Rows = n
		}
	}
	ev.DurationNs = now.Sub(start).Nanoseconds()
	p.Rows.Add(ev.Rows)
	s.rows, s.bytes, s.warnings = 0, 0, 0
	_ = p.Sess.Emit(ev)
}

// tagRows reads the row count at the end of a command tag (SELECT 3,
// INSERT 0 5, UPDATE 2, COPY 10).
func tagRows(tag []byte) (uint64, bool) {
	i := len(tag)
	for i > 0 && tag[i-1] >= '0' && tag[i-1] <= '9' {
		i--
	}
	if i == len(tag) || i == 0 || tag[i-1] != ' ' {
		return 0, false
	}
	var n uint64
	for _, c := range tag[i:] {
		n = n*10 + uint64(c-'0')
	}
	return n, true
}
