package webui

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/exporters/format"
	"github.com/tollgate-db/tollgate/sessions"
)

// Search is an audit query: every set field must match.
type Search struct {
	Since, Until time.Time
	User         string
	Database     string
	Session      string
	// TypePrefix matches event types that start with it (db.session.
	// or an exact type).
	TypePrefix string
	// Text is found, ignoring case, in the statement (db_query) of an
	// event.
	Text string
	// Before is where the page starts: events stored before it. Zero
	// means the newest.
	Before Position
}

// Position is a place in AUDIT: an event's stream sequence and its index
// in that message (a frame holds many events).
type Position struct {
	Seq   uint64
	Index int
}

func (p Position) String() string { return fmt.Sprintf("%d.%d", p.Seq, p.Index) }

func parsePosition(s string) (Position, error) {
	a, b, ok := strings.Cut(s, ".")
	seq, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("position %q: %w", s, err)
	}
	idx := 0
	if ok {
		if idx, err = strconv.Atoi(b); err != nil || idx < 0 {
			return Position{}, fmt.Errorf("position %q: bad index", s)
		}
	}
	return Position{Seq: seq, Index: idx}, nil
}

// Row is one event found.
type Row struct {
	Pos       Position
	Env       format.Envelope
	Statement string
	// Raw is the event as stored.
	Raw []byte
}

// Page is one page of results, newest first.
type Page struct {
	Rows []Row
	// Next is where the next (older) page starts; zero when the stream's
	// first message was reached.
	Next Position
	// Scanned counts the events read; Limited says the scan stopped at
	// its bound before the page was full, so Next continues the search.
	Scanned int
	Limited bool
	// Last is the stream's last sequence when the page was read: a live
	// tail of the page starts after it.
	Last uint64
}

// maxScan bounds the events one page reads, so a search that matches
// little never reads the whole stream in one request; the page then says
// so and links to the older part.
const maxScan = 200_000

// readChunk is the first range of messages read backwards; each further
// range doubles up to maxChunk.
const (
	readChunk = 8
	maxChunk  = 4096
)

// SearchAudit reads AUDIT backwards from s.Before (or its end) and
// returns up to limit matching events, newest first. Each message is a
// frame of events or one event alone (events.SplitEvents); ranges of
// messages are read in stream order with an ordered consumer and walked
// back.
func SearchAudit(ctx context.Context, js jetstream.JetStream, s Search, limit int) (*Page, error) {
	if s.Session != "" {
		return searchSession(ctx, js, s, limit)
	}
	st, err := js.Stream(ctx, events.AuditStream)
	if err != nil {
		return nil, fmt.Errorf("audit stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit stream: %w", err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	pg := &Page{Last: last}
	if info.State.Msgs == 0 {
		return pg, nil
	}
	hi, cut := last, -1 // cut: in message hi, keep events with index < cut (-1: all)
	if s.Before.Seq != 0 {
		hi, cut = min(s.Before.Seq, last), s.Before.Index
		if s.Before.Seq > last {
			cut = -1
		}
	}
	if !s.Until.IsZero() && s.Before.Seq == 0 {
		// Skip what was stored after the range: the stream stores in
		// time order. The minute of grace keeps events stored shortly
		// after their time (their time decides, below); events held
		// through a longer outage are found by a search without "to".
		hi = lastStoredBy(ctx, st, first, last, s.Until.Add(untilGrace))
	}
	m := newMatcher(s)
	size := uint64(readChunk)
	for hi >= first && hi > 0 {
		lo := first
		if hi-lo+1 > size {
			lo = hi - size + 1
		}
		type msg struct {
			seq  uint64
			data []byte
		}
		var msgs []msg
		older := false
		err := readRange(ctx, st, lo, hi, func(seq uint64, stamp time.Time, data []byte) {
			if !s.Since.IsZero() && stamp.Before(s.Since) {
				older = true // stored before the range: so is all before it
				return
			}
			msgs = append(msgs, msg{seq, data})
		})
		if err != nil {
			return nil, err
		}
		for i := len(msgs) - 1; i >= 0; i-- {
			mm := msgs[i]
			var evs [][]byte
			_ = events.SplitEvents(mm.data, func(ev []byte) error {
				evs = append(evs, ev)
				return nil
			})
			pg.Scanned += len(evs)
			end := len(evs)
			if mm.seq == hi && cut >= 0 {
				end = min(cut, end)
			}
			for j := end - 1; j >= 0; j-- {
				row, ok := m.match(evs[j])
				if !ok {
					continue
				}
				row.Pos = Position{Seq: mm.seq, Index: j}
				pg.Rows = append(pg.Rows, row)
				if len(pg.Rows) == limit {
					pg.Next = row.Pos
					return pg, nil
				}
			}
			if pg.Scanned >= maxScan && mm.seq > first {
				pg.Limited, pg.Next = true, Position{Seq: mm.seq}
				return pg, nil
			}
		}
		if older || lo == first {
			return pg, nil
		}
		hi, cut = lo-1, -1
		size = min(2*size, maxChunk)
	}
	return pg, nil
}

// searchSession answers a search within one session from the messages
// the sessions index names for it (sessions.Events), so its cost is the
// session's size, not the stream's.
func searchSession(ctx context.Context, js jetstream.JetStream, s Search, limit int) (*Page, error) {
	m := newMatcher(s)
	pg := &Page{}
	var rows []Row // the newest matches before s.Before, oldest first
	dropped := false
	lastSeq := uint64(0)
	err := sessions.Events(ctx, js, s.Session, func(seq uint64, idx int, ev []byte) error {
		if seq != lastSeq {
			pg.Scanned++
			lastSeq = seq
		}
		if s.Before.Seq != 0 && (seq > s.Before.Seq || (seq == s.Before.Seq && idx >= s.Before.Index)) {
			return nil
		}
		row, ok := m.match(ev)
		if !ok {
			return nil
		}
		row.Pos, row.Raw = Position{Seq: seq, Index: idx}, bytes.Clone(row.Raw)
		rows = append(rows, row)
		// Only the newest limit are shown: a long session is not held
		// whole.
		if len(rows) >= 2*limit {
			rows, dropped = append(rows[:0], rows[len(rows)-limit:]...), true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(rows) > limit {
		rows, dropped = rows[len(rows)-limit:], true
	}
	for i := len(rows) - 1; i >= 0; i-- {
		pg.Rows = append(pg.Rows, rows[i])
	}
	if dropped && len(pg.Rows) > 0 {
		pg.Next = pg.Rows[len(pg.Rows)-1].Pos
	}
	return pg, nil
}

// untilGrace is how long after a search's end the messages stored are
// still read for events whose time is within it.
const untilGrace = time.Minute

// lastStoredBy is the last sequence from first to last stored by t, found
// by bisection (as `tollgate audit tail --until` finds it); 0 when none
// is. Where a sequence cannot be read it answers last, so the walk back
// reads more rather than less.
func lastStoredBy(ctx context.Context, st jetstream.Stream, first, last uint64, t time.Time) uint64 {
	lo, hi := first, last // the answer is in [lo-1, hi]
	for lo <= hi {
		mid := lo + (hi-lo)/2
		m, err := st.GetMsg(ctx, mid)
		if err != nil {
			return last
		}
		if m.Time.After(t) {
			hi = mid - 1
		} else {
			lo = mid + 1
		}
	}
	return hi
}

// readRange calls fn with each message stored at sequences lo to hi, in
// order.
func readRange(ctx context.Context, st jetstream.Stream, lo, hi uint64, fn func(seq uint64, stamp time.Time, data []byte)) error {
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: lo})
	if err != nil {
		return fmt.Errorf("audit stream: %w", err)
	}
	// Nothing stored from lo on: waiting would wait for a new message.
	if info, err := cons.Info(ctx); err != nil {
		return fmt.Errorf("audit stream: %w", err)
	} else if info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(int(min(hi-lo+1, 1000))))
	if err != nil {
		return fmt.Errorf("audit stream: %w", err)
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("audit stream at %d: %w", lo, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		seq := md.Sequence.Stream
		if seq > hi {
			return nil
		}
		fn(seq, md.Timestamp, m.Data())
		if seq == hi || md.NumPending == 0 {
			return nil
		}
	}
}

type matcher struct {
	s Search
	// quoted are the exact values searched for as JSON strings: an event
	// without one of them in its bytes cannot match, so most events of a
	// narrow search are passed over without being read.
	quoted [][]byte
	text   []byte // lower case
	// rawText is set when the text cannot appear escaped in JSON, so its
	// absence from the event's bytes (ignoring ASCII case) rules the event
	// out before its statement is decoded.
	rawText bool
}

func newMatcher(s Search) *matcher {
	m := &matcher{s: s, text: []byte(strings.ToLower(s.Text)), rawText: true}
	for _, v := range []string{s.User, s.Database, s.Session} {
		if v != "" {
			q, _ := json.Marshal(v)
			m.quoted = append(m.quoted, q)
		}
	}
	for _, c := range m.text {
		// encoding/json escapes these (and <, >, & as \u00XX); other
		// bytes, UTF-8 included, are stored as they are.
		if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= 0x80 {
			m.rawText = false
		}
	}
	return m
}

// match reads an event's envelope and applies the search; only events
// that may match are decoded further.
func (m *matcher) match(ev []byte) (Row, bool) {
	s := m.s
	for _, q := range m.quoted {
		if !bytes.Contains(ev, q) {
			return Row{}, false
		}
	}
	hasQuery := bytes.Contains(ev, []byte(`"db_query"`))
	if len(m.text) > 0 && (!hasQuery || (m.rawText && !containsFold(ev, m.text))) {
		return Row{}, false
	}
	env, err := format.Scan(ev)
	if err != nil {
		return Row{}, false
	}
	if (!s.Since.IsZero() && env.Time.Before(s.Since)) || (!s.Until.IsZero() && env.Time.After(s.Until)) ||
		(s.User != "" && env.User != s.User) || (s.Database != "" && env.DBService != s.Database) ||
		(s.Session != "" && env.SID != s.Session) || (s.TypePrefix != "" && !strings.HasPrefix(env.Type, s.TypePrefix)) {
		return Row{}, false
	}
	var q struct {
		Query string `json:"db_query"`
	}
	if hasQuery {
		_ = json.Unmarshal(ev, &q)
	}
	if len(m.text) > 0 && !strings.Contains(strings.ToLower(q.Query), string(m.text)) {
		return Row{}, false
	}
	return Row{Env: env, Statement: q.Query, Raw: ev}, true
}

// containsFold reports whether b holds lower, ignoring ASCII case; lower
// is in lower case.
func containsFold(b, lower []byte) bool {
	if len(lower) == 0 {
		return true
	}
	first := lower[0]
	upper := first
	if 'a' <= first && first <= 'z' {
		upper -= 'a' - 'A'
	}
	for i := 0; i+len(lower) <= len(b); i++ {
		if c := b[i]; c != first && c != upper {
			continue
		}
		j := 1
		for ; j < len(lower); j++ {
			c := b[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				break
			}
		}
		if j == len(lower) {
			return true
		}
	}
	return false
}

func indentJSON(ev []byte) string {
	var b bytes.Buffer
	if json.Indent(&b, ev, "", "  ") != nil {
		return string(ev)
	}
	return b.String()
}

// pageSize is how many events an audit page shows.
const pageSize = 50

type auditData struct {
	Q                 url.Values
	Since, Until      string
	Page              *Page
	NextURL, FirstURL string
	DownloadURL       string
	// LiveURL follows the search from the newest event shown; empty on
	// older pages, which a live tail would not continue.
	LiveURL string
}

// parseSearch reads the search form; times are RFC 3339 or the
// datetime-local form (taken as UTC).
func parseSearch(q url.Values) (Search, error) {
	s := Search{User: strings.TrimSpace(q.Get("user")), Database: strings.TrimSpace(q.Get("db")),
		Session: strings.TrimSpace(q.Get("sid")), TypePrefix: strings.TrimSuffix(strings.TrimSpace(q.Get("type")), "*"),
		Text: strings.TrimSpace(q.Get("q"))}
	var err error
	if s.Since, err = parseTime(q.Get("since")); err != nil {
		return s, fmt.Errorf("from: %w", err)
	}
	if s.Until, err = parseTime(q.Get("until")); err != nil {
		return s, fmt.Errorf("to: %w", err)
	}
	if b := q.Get("before"); b != "" {
		if s.Before, err = parsePosition(b); err != nil {
			return s, err
		}
	}
	return s, nil
}

func parseTime(v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("want a time such as 2026-01-02T15:04 (UTC)")
}

// audit is the audit page. The trail is the API's to show to editors
// (as the sessions API is), so the page asks for the same role.
func (u *UI) audit(w http.ResponseWriter, r *http.Request, c *caller) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	q := r.URL.Query()
	d := auditData{Q: q, Since: q.Get("since"), Until: q.Get("until")}
	v := u.view(c, "Audit", "audit", &d)
	s, err := parseSearch(q)
	if err != nil {
		v.Error = err.Error()
		u.render(w, http.StatusBadRequest, "audit", v)
		return
	}
	if d.Page, err = SearchAudit(r.Context(), u.o.JS, s, pageSize); err != nil {
		v.Error = err.Error()
		u.render(w, http.StatusServiceUnavailable, "audit", v)
		return
	}
	dq := url.Values{}
	for k, vs := range q {
		dq[k] = vs
	}
	dq.Del("before")
	d.DownloadURL = "/audit/download?" + dq.Encode()
	if s.Before.Seq == 0 {
		dq.Set("from", strconv.FormatUint(d.Page.Last, 10))
		d.LiveURL = "/audit/live?" + dq.Encode()
	}
	if d.Page.Next.Seq != 0 {
		nq := url.Values{}
		for k, vs := range q {
			nq[k] = vs
		}
		nq.Set("before", d.Page.Next.String())
		d.NextURL = "/audit?" + nq.Encode()
	}
	if s.Before.Seq != 0 {
		fq := url.Values{}
		for k, vs := range q {
			fq[k] = vs
		}
		fq.Del("before")
		d.FirstURL = "/audit?" + fq.Encode()
	}
	u.render(w, http.StatusOK, "audit", v)
}

// maxDownload bounds the events one download holds.
const maxDownload = 100_000

// auditDownload answers the events the search selects as JSON lines, as
// stored (what exporters and `tollgate audit verify --file` read), newest
// first, up to maxDownload; a trailer says when that bound cut it.
func (u *UI) auditDownload(w http.ResponseWriter, r *http.Request, c *caller) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	s, err := parseSearch(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// The first page is read before anything is sent, so a failure is
	// still an error status.
	pg, err := SearchAudit(r.Context(), u.o.JS, s, 1000)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	// A large download outlasts the server's write timeout for answers.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(10 * time.Minute))
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Content-Disposition", `attachment; filename="tollgate-audit.jsonl"`)
	w.Header().Set("Trailer", "Tollgate-Truncated")
	bw := bufio.NewWriterSize(w, 64<<10)
	defer bw.Flush()
	n := 0
	for {
		for _, row := range pg.Rows {
			if n == maxDownload {
				bw.Flush()
				w.Header().Set("Tollgate-Truncated", strconv.Itoa(maxDownload))
				return
			}
			bw.Write(row.Raw)
			bw.WriteByte('\n')
			n++
		}
		if pg.Next.Seq == 0 || r.Context().Err() != nil {
			return
		}
		s.Before = pg.Next
		if pg, err = SearchAudit(r.Context(), u.o.JS, s, 1000); err != nil {
			u.o.Log.Warn("audit download cut short", "err", err)
			return
		}
	}
}
