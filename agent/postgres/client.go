package postgres

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-db/tollgate/agent"
	"github.com/tollgate-db/tollgate/agent/redact"
	"github.com/tollgate-db/tollgate/events"
)

// clientTypes are the message types a client may send after startup.
var clientTypes = func() (t [256]bool) {
	for _, c := range []byte("QPBDECSHFdcfXp") {
		t[c] = true
	}
	return t
}()

// malformed describes client input that did not decode.
type malformed struct {
	reason string
	typ    byte
	length int64
	prefix []byte // nil when the message may hold a secret
}

func (m *malformed) Error() string { return m.reason }

// segment is a byte range of the batch to forward.
type segment = agent.Segment

// clientDecoder turns client messages into audit events and decides what
// is forwarded. It keeps the prepared statements and portals it saw, so an
// Execute event can say which statement ran with which parameters.
type clientDecoder struct {
	maxMessage, maxCopy, maxParam int
	q                             *stmtQueue

	stmts   map[string]*prepared
	portals map[string]*portal

	// discardUntilSync: the agent refused an extended-protocol batch and,
	// like the server after an error, drops messages until Sync.
	discardUntilSync bool
	// discardCopy: the agent aborted a COPY; the client's remaining copy
	// messages are dropped.
	discardCopy bool
	copyTotal   uint64
	// CopyData counted since the last copy summary, and when the first of
	// them arrived: summaries span batches (see flushCopy).
	copyMsgs  uint64
	copyBytes uint64
	copySince time.Time

	// Output of one batch.
	evs        []events.Event
	entries    []entry
	segs       []segment
	types      []byte // types of the messages in segs, for refusals
	replies    []byte // answers the agent gives itself (after a refusal)
	terminate  bool
	statements uint64
	// copyEvs counts the copy summaries in evs: a batch whose only events
	// are copy summaries is not gated (see forward).
	copyEvs int
	// binds are the Bind events of this batch still in evs, by portal: an
	// Execute of the portal in the same batch replaces its Bind event.
	binds []pendingBind
	// lastKept says whether the message just decoded is forwarded.
	lastKept bool
	// refuseList are the parameters a statement may not set; refusal is
	// the first of them a statement of this batch sets.
	refuseList []string
	refusal    string
	// status is the transaction status of the last ReadyForQuery, for the
	// agent's own ReadyForQuery answers.
	status byte

	query    pgproto3.Query
	parse    pgproto3.Parse
	bind     pgproto3.Bind
	describe pgproto3.Describe
	execute  pgproto3.Execute
	close    pgproto3.Close
	fcall    pgproto3.FunctionCall
	copyFail pgproto3.CopyFail
}

// pendingBind is a Bind whose event belongs at index at of the batch's
// events. The event is built only when no Execute of the same batch folds
// it (see foldBind): in pgbench-style Bind/Execute/Sync batches it never
// is, and the slot stays nil until then.
type pendingBind struct {
	portal    string
	at        int
	stmtName  string
	params    []string
	truncated bool
	redacted  bool
}

// event builds the Bind event.
func (b *pendingBind) event() *events.PostgresBind {
	return &events.PostgresBind{StatementName: b.stmtName, PortalName: b.portal, Parameters: b.params, ParametersTruncated: b.truncated, Redacted: b.redacted}
}

// addEvent appends ev to the batch's events. The slice is handed to the
// recorder and never reused, so each batch starts a new one; room for a
// few events makes a statement's one allocation instead of growing it.
func (d *clientDecoder) addEvent(ev events.Event) {
	if d.evs == nil {
		d.evs = make([]events.Event, 0, 4)
	}
	d.evs = append(d.evs, ev)
}

type portal struct {
	name      string
	stmtName  string
	stmt      *prepared
	params    []string
	truncated bool
	// masked are the bound values masked as secrets, as sent.
	masked []string
}

func newClientDecoder(maxMessage, maxCopy, maxParam int, q *stmtQueue) *clientDecoder {
	return &clientDecoder{maxMessage: maxMessage, maxCopy: maxCopy, maxParam: maxParam, q: q,
		stmts: map[string]*prepared{}, portals: map[string]*portal{}}
}

func (d *clientDecoder) reset() {
	d.evs = nil // handed to the recorder, which may keep it
	d.entries = d.entries[:0]
	d.segs = d.segs[:0]
	d.types = d.types[:0]
	d.replies = d.replies[:0]
	d.statements = 0
	d.copyEvs = 0
	d.binds = d.binds[:0]
	d.terminate = false
	d.refusal = ""
}

// finishBinds builds the events of the Binds no Execute of the batch
// folded and removes the slots of those it did.
func (d *clientDecoder) finishBinds(folded bool) {
	for i := range d.binds {
		b := &d.binds[i]
		d.evs[b.at] = b.event()
	}
	clear(d.binds)
	d.binds = d.binds[:0]
	if !folded {
		return
	}
	k := 0
	for _, ev := range d.evs {
		if ev != nil {
			d.evs[k] = ev
			k++
		}
	}
	clear(d.evs[k:])
	d.evs = d.evs[:k]
}

// decode processes the complete messages at the start of b. It returns how
// many bytes it consumed and, when the next message is incomplete, how many
// bytes that message needs in all. A malformed message stops decoding; the
// batch's events are then discarded by the caller.
func (d *clientDecoder) decode(b []byte, now time.Time) (consumed, need int, bad *malformed) {
	d.reset()
	off := 0
	folded := false
	defer func() { d.finishBinds(folded) }()
	for {
		rest := b[off:]
		if len(rest) < headerLength {
			if len(rest) > 0 && !clientTypes[rest[0]] {
				return off, 0, d.unknownType(rest)
			}
			need = headerLength
			break
		}
		typ := rest[0]
		if !clientTypes[typ] {
			return off, 0, d.unknownType(rest)
		}
		n := int64(binary.BigEndian.Uint32(rest[1:5]))
		limit := int64(d.maxMessage)
		if typ == 'd' {
			limit = int64(d.maxCopy)
		}
		switch {
		case n < 4:
			return off, 0, &malformed{reason: fmt.Sprintf("message %q declares length %d, less than its own length field", typ, n), typ: typ, length: n, prefix: secretless(typ, rest)}
		case n-4 > limit:
			return off, 0, &malformed{reason: fmt.Sprintf("message %q of %d bytes is over the limit of %d bytes", typ, n, limit), typ: typ, length: n, prefix: secretless(typ, rest)}
		}
		total := int(n) + 1
		if len(rest) < total {
			need = total
			break
		}
		if typ == 'E' && len(d.binds) > 0 {
			folded = d.foldBind(rest[headerLength:total]) || folded
		}
		if m := d.message(typ, rest[headerLength:total], now); m != nil {
			m.length, m.typ = n, typ
			m.prefix = secretless(typ, rest[:total])
			return off, 0, m
		}
		if d.lastKept {
			if k := len(d.segs); k > 0 && d.segs[k-1].To == off {
				d.segs[k-1].To = off + total
			} else {
				d.segs = append(d.segs, segment{From: off, To: off + total})
			}
			d.types = append(d.types, typ)
		}
		off += total
		if d.terminate {
			break
		}
	}
	if d.copyMsgs > 0 && (d.copyBytes >= copySummaryBytes || now.Sub(d.copySince) >= copySummaryEvery) {
		d.flushCopy("data", "")
	}
	return off, need, nil
}

// foldBind drops the pending Bind event of the portal an Execute (body)
// runs: the Execute event carries the same statement, portal and
// parameters, so one event per execution says what ran. It reports
// whether it dropped one.
func (d *clientDecoder) foldBind(body []byte) bool {
	name, _, ok := cutZero(body)
	if !ok {
		return false // message() reports it
	}
	for i, b := range d.binds {
		if b.portal == name {
			// Its slot, still nil, is dropped by finishBinds.
			d.binds = append(d.binds[:i], d.binds[i+1:]...)
			return true
		}
	}
	return false
}

func (d *clientDecoder) unknownType(rest []byte) *malformed {
	return &malformed{reason: fmt.Sprintf("unknown message type 0x%02x", rest[0]), typ: rest[0], length: int64(len(rest)), prefix: secretless(rest[0], rest)}
}

// secretless returns up to 64 bytes of a message for the malformed_packet
// event, except for password messages and statements that may carry a
// password, which are never recorded.
func secretless(typ byte, b []byte) []byte {
	if typ == 'p' {
		return nil
	}
	b = b[:min(len(b), 64)]
	if typ == 'Q' || typ == 'P' {
		if _, found := redact.Postgres(string(b)); found.Any() {
			return nil
		}
	}
	return b
}

// redactedParam stands for a parameter value bound to a password.
const redactedParam = "***"

func bad(typ byte, err error) *malformed {
	return &malformed{reason: fmt.Sprintf("message %q does not decode: %v", typ, err)}
}

// message decodes one message into events and queue entries. It sets
// d.lastKept to whether the message is forwarded.
func (d *clientDecoder) message(typ byte, body []byte, now time.Time) *malformed {
	d.lastKept = true
	if d.discardUntilSync && typ != 'S' && typ != 'X' && typ != 'p' {
		d.lastKept = false
		return nil
	}
	if d.discardCopy && (typ == 'd' || typ == 'c' || typ == 'f') {
		d.lastKept = false
		if typ != 'd' {
			d.discardCopy = false
			d.copyTotal = 0
		}
		return nil
	}
	switch typ {
	case 'Q':
		if err := d.query.Decode(body); err != nil {
			return bad(typ, err)
		}
		d.flushCopy("data", "")
		d.checkSetting(d.query.String)
		text, found := redact.Postgres(d.query.String)
		d.addEvent(&events.Query{Query: text, Redacted: found.Any()})
		d.entries = append(d.entries, entry{kind: kQuery, at: now, secrets: found.Secrets})
		d.statements++
	case 'P':
		if err := d.parse.Decode(body); err != nil {
			return bad(typ, err)
		}
		d.checkSetting(d.parse.Query)
		text, found := redact.Postgres(d.parse.Query)
		st := &prepared{name: d.parse.Name, query: text, oids: d.parse.ParameterOIDs, secret: found}
		d.stmts[d.parse.Name] = st
		d.addEvent(&events.PostgresParse{StatementName: d.parse.Name, Query: text, ParameterOIDs: d.parse.ParameterOIDs, Redacted: found.Any()})
	case 'B':
		if !d.decodeBind(body) {
			if err := d.bind.Decode(body); err != nil {
				return bad(typ, err)
			}
		}
		st := d.stmts[d.bind.PreparedStatement]
		oids := d.q.oidsOf(st)
		pf := d.bind.ParameterFormatCodes
		if len(pf) > 1 && len(pf) != len(d.bind.Parameters) {
			return bad(typ, fmt.Errorf("%d parameter formats for %d parameters", len(pf), len(d.bind.Parameters)))
		}
		params := make([]string, len(d.bind.Parameters))
		trunc := false
		var masked []string
		for i, v := range d.bind.Parameters {
			binaryFormat := false
			switch len(pf) {
			case 0:
			case 1:
				binaryFormat = pf[0] == 1
			default:
				binaryFormat = pf[i] == 1
			}
			var oid uint32
			if i < len(oids) {
				oid = oids[i]
			}
			var t bool
			if st != nil && st.secret.Param(i+1) {
				params[i] = redactedParam
				if v != nil {
					masked = append(masked, string(v))
				}
				continue
			}
			params[i], t = renderParam(v, binaryFormat, oid, d.maxParam)
			trunc = trunc || t
		}
		redacted := st != nil && st.secret.Any()
		// A portal is only read while decoding (its values are copied
		// into events), so a rebound one is overwritten in place.
		pt := d.portals[d.bind.DestinationPortal]
		if pt == nil {
			pt = new(portal)
			d.portals[d.bind.DestinationPortal] = pt
		}
		*pt = portal{name: d.bind.DestinationPortal, stmtName: d.bind.PreparedStatement, stmt: st, params: params, truncated: trunc, masked: masked}
		d.forgetBind(pt.name)
		d.binds = append(d.binds, pendingBind{portal: pt.name, at: len(d.evs), stmtName: pt.stmtName, params: params, truncated: trunc, redacted: redacted})
		d.addEvent(nil)
	case 'D':
		if err := d.describe.Decode(body); err != nil {
			return bad(typ, err)
		}
		if d.describe.ObjectType == 'S' {
			st := d.stmts[d.describe.Name]
			d.entries = append(d.entries, entry{kind: kDescribe, at: now, stmt: st})
		}
	case 'E':
		if !d.decodeExecute(body) {
			if err := d.execute.Decode(body); err != nil {
				return bad(typ, err)
			}
		}
		ev := &events.PostgresExecute{PortalName: d.execute.Portal, MaxRows: d.execute.MaxRows}
		var secrets []string
		if p := d.portals[d.execute.Portal]; p != nil {
			ev.StatementName, ev.Parameters, ev.ParametersTruncated = p.stmtName, p.params, p.truncated
			if p.stmt != nil {
				ev.Query, ev.Redacted = p.stmt.query, p.stmt.secret.Any()
				secrets = slices.Concat(p.stmt.secret.Secrets, p.masked)
			}
		}
		d.addEvent(ev)
		d.entries = append(d.entries, entry{kind: kExec, at: now, secrets: secrets})
		d.statements++
	case 'C':
		if err := d.close.Decode(body); err != nil {
			return bad(typ, err)
		}
		ev := &events.PostgresClose{Name: d.close.Name}
		if d.close.ObjectType == 'S' {
			ev.Kind = "statement"
			delete(d.stmts, d.close.Name)
		} else {
			ev.Kind = "portal"
			delete(d.portals, d.close.Name)
			d.forgetBind(d.close.Name)
		}
		d.addEvent(ev)
	case 'S', 'H', 'c', 'X':
		if len(body) != 0 {
			return &malformed{reason: fmt.Sprintf("message %q must be empty but has %d bytes", typ, len(body))}
		}
		switch typ {
		case 'S':
			if d.discardUntilSync {
				d.discardUntilSync = false
				d.lastKept = false
				d.replies = append(d.replies, readyForQuery(d.status)...)
				return nil
			}
			d.entries = append(d.entries, entry{kind: kSync, at: now})
		case 'c':
			d.flushCopy("done", "")
			d.copyTotal = 0
		case 'X':
			d.terminate = true
		}
	case 'F':
		if err := d.fcall.Decode(body); err != nil {
			return bad(typ, err)
		}
		args := make([]string, len(d.fcall.Arguments))
		for i, a := range d.fcall.Arguments {
			binaryFormat := false
			switch len(d.fcall.ArgFormatCodes) {
			case 0:
			case 1:
				binaryFormat = d.fcall.ArgFormatCodes[0] == 1
			default:
				if i < len(d.fcall.ArgFormatCodes) {
					binaryFormat = d.fcall.ArgFormatCodes[i] == 1
				}
			}
			switch {
			case a == nil:
				args[i] = nullParam
			case binaryFormat:
				args[i], _ = renderParam(a, true, 0, d.maxParam)
			default:
				args[i], _ = renderParam(a, false, 0, d.maxParam)
			}
		}
		d.addEvent(&events.PostgresFunctionCall{FunctionOID: d.fcall.Function, Arguments: args})
		d.entries = append(d.entries, entry{kind: kFunc, at: now})
		d.statements++
	case 'd':
		if d.copyMsgs == 0 {
			d.copySince = now
		}
		d.copyMsgs++
		d.copyBytes += uint64(len(body))
		d.copyTotal += uint64(len(body))
	case 'f':
		if err := d.copyFail.Decode(body); err != nil {
			return bad(typ, err)
		}
		d.flushCopy("fail", d.copyFail.Message)
		d.copyTotal = 0
	case 'p':
		d.lastKept = false
		return &malformed{reason: "unexpected password or authentication message after the session began (the agent authenticates to the database itself)"}
	}
	return nil
}

// decodeBind decodes a well-formed Bind into d.bind as pgproto3 would, but
// reusing d.bind's slices and, for the statement and portal names, the
// strings the decoder already holds: a statement executed again costs no
// allocation to decode. It reports false for anything else, which pgproto3
// then decodes or rejects with its own error.
func (d *clientDecoder) decodeBind(src []byte) bool {
	b := &d.bind
	i := bytes.IndexByte(src, 0)
	if i < 0 {
		return false
	}
	portalName := src[:i]
	src = src[i+1:]
	if i = bytes.IndexByte(src, 0); i < 0 {
		return false
	}
	stmtName := src[:i]
	src = src[i+1:]
	var ok bool
	if b.ParameterFormatCodes, src, ok = formatCodes(b.ParameterFormatCodes[:0], src); !ok {
		return false
	}
	if len(src) < 2 {
		return false
	}
	n := int(binary.BigEndian.Uint16(src))
	src = src[2:]
	b.Parameters = b.Parameters[:0]
	for range n {
		if len(src) < 4 {
			return false
		}
		size := int(int32(binary.BigEndian.Uint32(src)))
		src = src[4:]
		if size == -1 {
			b.Parameters = append(b.Parameters, nil)
			continue
		}
		if size < 0 || len(src) < size {
			return false
		}
		b.Parameters = append(b.Parameters, src[:size])
		src = src[size:]
	}
	if b.ResultFormatCodes, _, ok = formatCodes(b.ResultFormatCodes[:0], src); !ok {
		return false
	}
	b.DestinationPortal = ""
	if len(portalName) > 0 {
		if pt := d.portals[string(portalName)]; pt != nil {
			b.DestinationPortal = pt.name
		} else {
			b.DestinationPortal = string(portalName)
		}
	}
	b.PreparedStatement = ""
	if len(stmtName) > 0 {
		if st := d.stmts[string(stmtName)]; st != nil && st.name == string(stmtName) {
			b.PreparedStatement = st.name
		} else {
			b.PreparedStatement = string(stmtName)
		}
	}
	return true
}

// decodeExecute decodes a well-formed Execute into d.execute without
// pgproto3's copy of the portal name, which the unnamed portal does not
// need; it reports false for anything else, which pgproto3 then decodes
// or rejects with its own error, as before.
func (d *clientDecoder) decodeExecute(body []byte) bool {
	i := bytes.IndexByte(body, 0)
	if i < 0 || len(body)-i-1 < 4 {
		return false
	}
	d.execute.Portal = string(body[:i])
	d.execute.MaxRows = binary.BigEndian.Uint32(body[i+1:])
	return true
}

// checkSetting notes the first refused parameter a statement sets.
func (d *clientDecoder) checkSetting(q string) {
	if d.refusal == "" && len(d.refuseList) > 0 {
		d.refusal = refusedSetting(q, d.refuseList)
	}
}

// A long COPY FROM STDIN is summarised at least every copySummaryBytes of
// data or copySummaryEvery, whichever comes first.
const (
	copySummaryBytes = 8 << 20
	copySummaryEvery = time.Second
)

// flushCopy turns the CopyData counted since the last summary into one
// db.session.postgres.copy event; done and fail always make one.
//
// CopyData carries rows, never a statement: the COPY statement itself was
// a Query or Parse/Execute, gated like every statement before it reached
// the database. So copy summaries do not hold back the client's data: a
// batch whose only events are copy summaries is forwarded at once and its
// events are stored on the session's asynchronous path, like results.
// Gating every client read of a COPY cost one store round trip per 32 KiB.
func (d *clientDecoder) flushCopy(phase, reason string) {
	if phase == "data" && d.copyMsgs == 0 {
		return
	}
	d.addEvent(&events.PostgresCopy{Phase: phase, Messages: d.copyMsgs, Bytes: d.copyBytes, TotalBytes: d.copyTotal, Reason: reason})
	d.copyEvs++
	d.copyMsgs, d.copyBytes = 0, 0
}

// forgetBind drops the pending Bind of a portal that is rebound or closed:
// its event is built now, since no Execute of this binding follows.
func (d *clientDecoder) forgetBind(portal string) {
	for i, b := range d.binds {
		if b.portal == portal {
			d.evs[b.at] = b.event()
			d.binds = append(d.binds[:i], d.binds[i+1:]...)
			return
		}
	}
}

// gated reports whether the batch has events that must be stored before
// it is forwarded: any but copy summaries.
func (d *clientDecoder) gated() bool { return len(d.evs) > d.copyEvs }

// malformedEvent is the event for m.
func malformedEvent(m *malformed) *events.MalformedPacket {
	ev := &events.MalformedPacket{Direction: "client", Reason: m.reason, Length: m.length}
	if len(m.prefix) > 0 {
		ev.Prefix = hex.EncodeToString(m.prefix)
	}
	return ev
}

// formatCodes appends to dst the format codes (Int16 count, Int16 each) at
// the start of src and returns what follows them; false when src is short.
// It reuses dst's array, as the Bind decoder reuses its message.
func formatCodes(dst []int16, src []byte) ([]int16, []byte, bool) {
	if len(src) < 2 {
		return dst, src, false
	}
	n := int(binary.BigEndian.Uint16(src))
	src = src[2:]
	if len(src) < 2*n {
		return dst, src, false
	}
	for range n {
		dst = append(dst, int16(binary.BigEndian.Uint16(src)))
		src = src[2:]
	}
	return dst, src, true
}
