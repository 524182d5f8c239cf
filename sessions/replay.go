package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// Entry kinds of a timeline.
const (
	KindStart     = "start"
	KindStatement = "statement"
	KindPrepare   = "prepare"
	KindBind      = "bind"
	KindResult    = "result"
	KindTerminate = "terminate"
	KindEnd       = "end"
	KindOther     = "other"
)

// Result is what the database answered to one statement.
type Result struct {
	Success    bool   `json:"success"`
	Tag        string `json:"command_tag,omitempty"`
	Rows       uint64 `json:"rows"`
	ErrorCode  string `json:"error_code,omitempty"`
	Error      string `json:"error,omitempty"`
	DurationNs int64  `json:"duration_ns"`
}

// Summary is the result in a few words: the tag or the error code, the
// rows.
func (r Result) Summary() string {
	if !r.Success {
		return fmt.Sprintf("ERROR %s: %s", r.ErrorCode, r.Error)
	}
	tag := r.Tag
	if tag == "" {
		tag = "OK"
	}
	return fmt.Sprintf("%s (%d rows)", tag, r.Rows)
}

// Entry is one event of a session on its timeline.
type Entry struct {
	EI uint64 `json:"ei"`
	// Offset is the time since the session started.
	Offset time.Duration `json:"offset_ns"`
	Type   string        `json:"type"`
	Kind   string        `json:"kind"`
	// Statement and Params are set for statements, prepares and binds.
	Statement     string   `json:"statement,omitempty"`
	Params        []string `json:"params,omitempty"`
	StatementName string   `json:"statement_name,omitempty"`
	ParamOIDs     []uint32 `json:"param_oids,omitempty"`
	// Result is set for results.
	Result *Result `json:"result,omitempty"`
	// Note says what other entries carry: the access decision, why the
	// session ended, the termination message.
	Note string `json:"note,omitempty"`
}

// Timeline is one session, event by event, in ei order.
type Timeline struct {
	Session Session `json:"session"`
	Entries []Entry `json:"entries"`
	// Missing lists the ei values absent between 0 and the last one (the
	// first maxMissing of them), MissingTotal counts them all: an audit
	// trail with no gap has none.
	Missing      []uint64 `json:"missing_ei,omitempty"`
	MissingTotal uint64   `json:"missing_total,omitempty"`
}

// maxMissing bounds the missing ei values listed: a corrupt ei must not
// make the list huge.
const maxMissing = 1000

// Load reads one session from AUDIT: the messages the index names for it,
// then those stored since the index last read AUDIT, never the whole
// stream (see loadEvents).
func Load(ctx context.Context, js jetstream.JetStream, sid string) (*Timeline, error) {
	if err := events.ValidToken(sid); err != nil {
		return nil, fmt.Errorf("session id: %w", err)
	}
	var recs []*record
	err := loadEvents(ctx, js, sid, func(_ uint64, _ int, ev []byte) error {
		r := &record{}
		if err := json.Unmarshal(ev, r); err != nil {
			return fmt.Errorf("sessions: an event of session %s does not decode: %w", sid, err)
		}
		if r.SID == sid {
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("no session %s in the audit stream (sessions ls lists them)", sid)
	}
	return build(recs), nil
}

// FromEvents builds a timeline from stored events (JSON), in any order.
func FromEvents(data [][]byte) (*Timeline, error) {
	recs := make([]*record, 0, len(data))
	for _, d := range data {
		r := &record{}
		if err := json.Unmarshal(d, r); err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("no events")
	}
	return build(recs), nil
}

func build(recs []*record) *Timeline {
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].EI < recs[j].EI })
	p := NewProjection()
	for _, r := range recs {
		p.apply(&r.sessionFields)
	}
	t := &Timeline{}
	if ss := p.Sessions(Filter{}); len(ss) > 0 {
		t.Session = ss[0]
	}
	start := t.Session.Start
	next := uint64(0)
	for _, r := range recs {
		if r.EI > next {
			t.MissingTotal += r.EI - next
			for ; next < r.EI && len(t.Missing) < maxMissing; next++ {
				t.Missing = append(t.Missing, next)
			}
			next = r.EI
		}
		if r.EI == next {
			next++
		}
		e := Entry{EI: r.EI, Offset: r.Time.Sub(start), Type: r.Type}
		switch r.Type {
		case "db.session.start":
			e.Kind = KindStart
			e.Note = "rule: " + r.Rule
			if r.Success != nil && !*r.Success {
				e.Note = "denied: " + r.Error
			}
		case "db.session.query", "db.session.postgres.execute", "db.session.mysql.execute":
			e.Kind, e.Statement, e.Params, e.StatementName = KindStatement, r.Query, r.Params, r.StmtName
		case "db.session.postgres.parse", "db.session.mysql.prepare":
			e.Kind, e.Statement, e.StatementName, e.ParamOIDs = KindPrepare, r.Query, r.StmtName, r.ParamOIDs
		case "db.session.postgres.bind":
			e.Kind, e.Params, e.StatementName = KindBind, r.Params, r.StmtName
		case "db.session.result":
			e.Kind = KindResult
			e.Result = &Result{Success: r.Success == nil || *r.Success, Tag: r.Tag, Rows: r.Rows,
				ErrorCode: r.ErrorCode, Error: r.ErrorMsg, DurationNs: r.DurationNs}
			if e.Result.Error == "" && !e.Result.Success {
				e.Result.Error = r.Error
			}
		case "db.session.terminate":
			e.Kind, e.Note = KindTerminate, r.Reason+": "+r.Message
		case "db.session.end":
			e.Kind = KindEnd
			e.Note = fmt.Sprintf("%s; %d statements, %d rows, %d errors", r.Reason, r.Statements, r.Rows, r.Errors)
		default:
			e.Kind = KindOther
			switch {
			case r.Query != "":
				e.Statement = r.Query
			case r.Reason != "":
				e.Note = r.Reason
			case r.CopyPhase != "":
				e.Note = fmt.Sprintf("COPY %s, %d bytes", r.CopyPhase, r.CopyBytes)
			}
		}
		t.Entries = append(t.Entries, e)
	}
	return t
}

// Statement is a statement to re-run with the results it had.
type Statement struct {
	EI     uint64        `json:"ei"`
	Offset time.Duration `json:"offset_ns"`
	// Extended is set for statements sent with parameters through the
	// extended protocol (or prepared statements).
	Extended  bool     `json:"extended,omitempty"`
	Query     string   `json:"statement"`
	Params    []string `json:"params,omitempty"`
	ParamOIDs []uint32 `json:"param_oids,omitempty"`
	Results   []Result `json:"results"`
}

// Statements pairs each statement with the results that follow it until
// the client's next command (a prepare, a bind, another statement, a
// MySQL COM_PING…, whose own results are not the statement's). Clients
// that pipeline statements without waiting for answers would have their
// results attributed to the last one sent; psql, pgbench and most drivers
// wait.
func (t *Timeline) Statements() []Statement {
	var out []Statement
	oids := map[string][]uint32{}
	current := -1 // index in out of the statement results belong to
	for _, e := range t.Entries {
		switch e.Kind {
		case KindPrepare:
			oids[e.StatementName] = e.ParamOIDs
			current = -1
		case KindStatement:
			s := Statement{EI: e.EI, Offset: e.Offset, Query: e.Statement, Params: e.Params,
				Extended: e.Type != "db.session.query"}
			if s.Extended {
				s.ParamOIDs = oids[e.StatementName]
			}
			out = append(out, s)
			current = len(out) - 1
		case KindResult:
			if current >= 0 {
				out[current].Results = append(out[current].Results, *e.Result)
			}
		case KindBind, KindOther:
			// COPY data belongs to the statement that started the COPY;
			// any other client command has results of its own.
			if e.Type != "db.session.postgres.copy" && e.Type != "db.session.malformed_packet" {
				current = -1
			}
		}
	}
	return out
}

// WriteText prints the timeline for people: one line per statement with
// its parameters and the results that followed, and the session's start,
// terminations and end.
func (t *Timeline) WriteText(w io.Writer) error {
	s := t.Session
	fmt.Fprintf(w, "session %s: user %s on %s as db_user %s db_name %s, started %s\n",
		s.SID, s.User, s.Database, s.DBUser, s.DBName, s.Start.UTC().Format(time.RFC3339Nano))
	if t.MissingTotal > 0 {
		fmt.Fprintf(w, "warning: %d events missing from the audit trail: ei %s\n", t.MissingTotal, joinUints(t.Missing))
	}
	for _, e := range t.Entries {
		off := fmt.Sprintf("+%9.3fs", e.Offset.Seconds())
		switch e.Kind {
		case KindStart:
			fmt.Fprintf(w, "%s  [%d] START     %s\n", off, e.EI, e.Note)
		case KindStatement:
			line := fmt.Sprintf("%s  [%d] STATEMENT %s", off, e.EI, oneLine(e.Statement))
			if len(e.Params) > 0 {
				line += "  params [" + strings.Join(quoteAll(e.Params), ", ") + "]"
			}
			fmt.Fprintln(w, line)
		case KindResult:
			fmt.Fprintf(w, "%s  [%d]   -> %s in %s\n", off, e.EI, e.Result.Summary(), time.Duration(e.Result.DurationNs).Round(time.Microsecond))
		case KindTerminate:
			fmt.Fprintf(w, "%s  [%d] TERMINATE %s\n", off, e.EI, e.Note)
		case KindEnd:
			fmt.Fprintf(w, "%s  [%d] END       %s\n", off, e.EI, e.Note)
		}
	}
	return nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return s
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

func joinUints(v []uint64) string {
	parts := make([]string, 0, len(v))
	for i, n := range v {
		if i == 20 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, strconv.FormatUint(n, 10))
	}
	return strings.Join(parts, ", ")
}
