package redis

import (
	"bytes"
	"fmt"
	"strconv"
)

// Reply summarises one complete top-level server reply.
type Reply struct {
	// Type is the RESP type byte: + - : $ * _ # , ( ! = % ~ >.
	Type byte
	// Err is the error text of a - or ! reply (cut to maxErr bytes).
	Err string
	// Elems is the number of elements of an aggregate (pairs for a map),
	// -1 for a null array or bulk string.
	Elems int64
	// Bytes is the size of the reply on the wire.
	Bytes int64
	// Head holds the first scalar elements of an aggregate (up to
	// maxHead of them, each cut to maxHeadLen bytes): enough to tell a
	// pub/sub message or confirmation ("message", "subscribe", count).
	Head []string
}

const (
	maxErr     = 512
	maxHead    = 3
	maxHeadLen = 64
	// maxLine bounds how much of a simple line is kept; the rest of a
	// longer one (a MONITOR line) is only counted.
	maxLine = 4 << 10
)

// frame is an open aggregate: how many elements it still waits for, and
// whether it is an attribute (|), which precedes a value rather than
// being one.
type frame struct {
	remain int64
	attr   bool
}

// ReplyScanner follows the server's reply stream across reads, telling
// where each top-level reply ends, without copying it: only lines are
// buffered (up to maxLine), bulk payloads are skipped.
type ReplyScanner struct {
	line     []byte
	lineLen  int // bytes of the current line seen, beyond what line keeps
	bulk     int64
	bulkType byte
	bulkBuf  []byte
	stack    []frame
	cur      Reply
	inReply  bool
}

// Feed scans b. For each top-level reply that ends in b it calls done with
// the offset just past it; start is where in b it began, or -1 when it
// began in an earlier read. An error means the server sent something that
// is not RESP.
func (s *ReplyScanner) Feed(b []byte, done func(start, end int, r *Reply)) error {
	i := 0
	start := -1
	if !s.inReply {
		start = 0
	}
	for i < len(b) {
		if !s.inReply {
			s.inReply = true
			s.cur = Reply{}
			start = i
		}
		if s.bulk > 0 {
			k := int(min(s.bulk, int64(len(b)-i)))
			// The payload ends in CRLF, which may straddle reads: each of
			// its two bytes is checked where it arrives.
			for j := max(0, int(s.bulk)-2); j < k; j++ {
				if want := "\n\r"[s.bulk-int64(j)-1]; b[i+j] != want {
					return fmt.Errorf("bulk reply not followed by CRLF")
				}
			}
			if keep := s.keepBulk(); keep > 0 {
				payload := min(k, int(max(s.bulk-2, 0)))
				s.bulkBuf = append(s.bulkBuf, b[i:i+min(payload, keep)]...)
			}
			s.bulk -= int64(k)
			s.cur.Bytes += int64(k)
			i += k
			if s.bulk == 0 {
				if err := s.bulkDone(); err != nil {
					return err
				}
				if s.complete(done, &start, i) {
					continue
				}
			}
			continue
		}
		nl := bytes.IndexByte(b[i:], '\n')
		var part []byte
		if nl < 0 {
			part = b[i:]
		} else {
			part = b[i : i+nl+1]
		}
		s.cur.Bytes += int64(len(part))
		if room := maxLine - len(s.line); room > 0 {
			s.line = append(s.line, part[:min(room, len(part))]...)
		}
		s.lineLen += len(part)
		i += len(part)
		if nl < 0 {
			continue
		}
		line := s.line
		s.line, s.lineLen = s.line[:0], 0
		if len(line) < 3 || line[len(line)-2] != '\r' {
			return fmt.Errorf("reply line %q does not end in CRLF", clip(line))
		}
		ended, err := s.item(line[0], line[1:len(line)-2])
		if err != nil {
			return err
		}
		if ended && s.complete(done, &start, i) {
			continue
		}
	}
	return nil
}

// keepBulk is how many bytes of the bulk payload in progress are kept.
func (s *ReplyScanner) keepBulk() int {
	switch {
	case s.bulkType == '!' && len(s.stack) == 0:
		return maxErr - len(s.bulkBuf)
	case len(s.stack) == 1 && !s.stack[0].attr && len(s.cur.Head) < maxHead:
		return maxHeadLen - len(s.bulkBuf)
	}
	return 0
}

func (s *ReplyScanner) bulkDone() error {
	v := string(s.bulkBuf)
	s.bulkBuf = s.bulkBuf[:0]
	switch {
	case s.bulkType == '!' && len(s.stack) == 0:
		s.cur.Err = v
	case len(s.stack) == 1 && !s.stack[0].attr && len(s.cur.Head) < maxHead:
		s.cur.Head = append(s.cur.Head, v)
	}
	s.element()
	return nil
}

// item handles one line; ended reports that it completed an element.
func (s *ReplyScanner) item(t byte, v []byte) (bool, error) {
	top := len(s.stack) == 0
	switch t {
	case '+', ':', '_', '#', ',', '(', '-':
		if t == '-' && top {
			s.cur.Err = string(v[:min(len(v), maxErr)])
		}
		if top {
			s.cur.Type = t
		} else if len(s.stack) == 1 && !s.stack[0].attr && len(s.cur.Head) < maxHead {
			s.cur.Head = append(s.cur.Head, string(v[:min(len(v), maxHeadLen)]))
		}
		s.element()
		return true, nil
	case '$', '!', '=':
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || n < -1 || (n == -1 && t != '$') {
			return false, fmt.Errorf("invalid length %q of a %c reply", clip(v), t)
		}
		if top {
			s.cur.Type = t
			if n < 0 {
				s.cur.Elems = -1
			}
		}
		if n < 0 {
			s.element()
			return true, nil
		}
		s.bulk, s.bulkType = n+2, t
		return false, nil
	case '*', '%', '~', '>', '|':
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || n < -1 || (n == -1 && t != '*') {
			return false, fmt.Errorf("invalid length %q of a %c reply (streamed aggregates are not expected from Redis)", clip(v), t)
		}
		if top && t != '|' {
			s.cur.Type = t
			s.cur.Elems = n
		}
		elems := n
		if t == '%' || t == '|' {
			elems = 2 * n
		}
		if elems <= 0 {
			if t == '|' {
				return false, nil
			}
			s.element()
			return true, nil
		}
		if len(s.stack) >= 256 {
			return false, fmt.Errorf("reply nested more than 256 deep")
		}
		s.stack = append(s.stack, frame{remain: elems, attr: t == '|'})
		return false, nil
	}
	return false, fmt.Errorf("unknown reply type %s", quoteByte(t))
}

// element records that a value ended, closing the aggregates it ends.
func (s *ReplyScanner) element() {
	for len(s.stack) > 0 {
		f := &s.stack[len(s.stack)-1]
		f.remain--
		if f.remain > 0 {
			return
		}
		attr := f.attr
		s.stack = s.stack[:len(s.stack)-1]
		if attr {
			// An attribute is not a value: its parent still waits for
			// the value it describes.
			return
		}
	}
	s.inReply = false
}

// complete reports a finished top-level reply ending at end.
func (s *ReplyScanner) complete(done func(start, end int, r *Reply), start *int, end int) bool {
	if s.inReply {
		return false
	}
	r := s.cur
	done(*start, end, &r)
	*start = end
	return true
}

// Pending reports whether a reply is partly scanned.
func (s *ReplyScanner) Pending() bool { return s.inReply }

func clip(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}
