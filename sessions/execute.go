package sessions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-db/tollgate/protocol"
)

// Paces of a re-execution.
const (
	PaceRecorded = "recorded"
	PaceFast     = "fast"
)

// ExecOptions configure Execute.
type ExecOptions struct {
	// Target is the DSN of the database to run the statements on
	// (postgres://… or a libpq keyword string).
	Target string
	// Pace is PaceRecorded (wait as long between statements as the
	// session did) or PaceFast (no waiting; the default).
	Pace string
	// Progress, when set, receives a progress bar redrawn in place.
	Progress io.Writer
}

// Outcome is one statement run again.
type Outcome struct {
	EI        uint64   `json:"ei"`
	Statement string   `json:"statement"`
	Params    []string `json:"params,omitempty"`
	Recorded  []Result `json:"recorded"`
	Replayed  []Result `json:"replayed"`
	// Difference says how the results differ; empty when they agree on
	// count, success, command tag, rows and error codes.
	Difference string `json:"difference,omitempty"`
}

// Report is the outcome of a re-execution.
type Report struct {
	SID         string        `json:"sid"`
	Target      string        `json:"target"`
	Statements  int           `json:"statements"`
	Differences int           `json:"differences"`
	Elapsed     time.Duration `json:"elapsed_ns"`
	Outcomes    []Outcome     `json:"outcomes"`
}

// Execute runs the statements of t again on the target database, one by
// one in their order, and compares each one's results with the recorded
// ones. PostgreSQL (and CockroachDB) sessions only: simple-protocol
// statements run as simple queries (several statements in one keep their
// several results), extended-protocol ones with their recorded parameters
// in text form and the parameter types their Parse declared.
func Execute(ctx context.Context, t *Timeline, o ExecOptions) (*Report, error) {
	var newRunner func(ctx context.Context, target string) (runner, error)
	// A timeline whose events name no protocol is replayed as PostgreSQL,
	// as it always was.
	engine := protocol.Postgres
	if t.Session.Protocol != "" {
		engine = protocol.EngineOf(t.Session.Protocol)
	}
	switch engine {
	case protocol.Postgres:
		newRunner = newPGRunner
	case protocol.MySQL:
		newRunner = newMySQLRunner
	default:
		return nil, fmt.Errorf("re-executing %s sessions is not supported yet (PostgreSQL, CockroachDB and MySQL sessions are)", t.Session.Protocol)
	}
	switch o.Pace {
	case "":
		o.Pace = PaceFast
	case PaceFast, PaceRecorded:
	default:
		return nil, fmt.Errorf("pace %q: want %s or %s", o.Pace, PaceRecorded, PaceFast)
	}
	if o.Target == "" {
		return nil, errors.New("no target database: give its DSN (--target)")
	}
	r, err := newRunner(ctx, o.Target)
	if err != nil {
		return nil, fmt.Errorf("connect to the target: %w", err)
	}
	defer r.close()
	stmts := t.Statements()
	rep := &Report{SID: t.Session.SID, Target: r.name(), Statements: len(stmts)}
	bar := newProgress(o.Progress, len(stmts))
	began := time.Now()
	for i, s := range stmts {
		if o.Pace == PaceRecorded && i > 0 {
			wait := time.Until(began.Add(s.Offset - stmts[0].Offset))
			if wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return rep, ctx.Err()
				}
			}
		}
		got, err := r.run(ctx, s)
		if err != nil {
			return rep, fmt.Errorf("statement ei %d: %w", s.EI, err)
		}
		oc := Outcome{EI: s.EI, Statement: s.Query, Params: s.Params, Recorded: s.Results, Replayed: got,
			Difference: compare(s.Results, got)}
		if oc.Difference != "" {
			rep.Differences++
		}
		rep.Outcomes = append(rep.Outcomes, oc)
		bar.step(i+1, rep.Differences)
	}
	bar.done()
	rep.Elapsed = time.Since(began)
	return rep, nil
}

// runner runs statements on a target database and summarises their
// results as the agent records them.
type runner interface {
	run(ctx context.Context, s Statement) ([]Result, error)
	name() string
	close()
}

type pgRunner struct {
	conn   *pgconn.PgConn
	target string
}

func newPGRunner(ctx context.Context, target string) (runner, error) {
	conn, err := pgconn.Connect(ctx, target)
	if err != nil {
		return nil, err
	}
	return &pgRunner{conn: conn, target: target}, nil
}

func (r *pgRunner) name() string { return redactDSN(r.target) }

func (r *pgRunner) close() { _ = r.conn.Close(context.Background()) }

// run executes one statement and summarises its results as the agent
// would have recorded them.
func (r *pgRunner) run(ctx context.Context, s Statement) ([]Result, error) {
	conn := r.conn
	if !s.Extended {
		start := time.Now()
		rs, err := conn.Exec(ctx, s.Query).ReadAll()
		var out []Result
		for _, r := range rs {
			out = append(out, summarize(r.CommandTag, len(r.Rows), r.Err, time.Since(start)))
		}
		if err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				return nil, err
			}
			if len(out) == 0 || out[len(out)-1].Success {
				out = append(out, summarize(pgconn.CommandTag{}, 0, err, time.Since(start)))
			}
		}
		return out, nil
	}
	params := make([][]byte, len(s.Params))
	for i, p := range s.Params {
		if p != "NULL" {
			params[i] = []byte(p)
		}
	}
	var oids []uint32
	if len(s.ParamOIDs) == len(params) {
		oids = s.ParamOIDs
	}
	start := time.Now()
	res := conn.ExecParams(ctx, s.Query, params, oids, nil, nil).Read()
	if res.Err != nil {
		var pe *pgconn.PgError
		if !errors.As(res.Err, &pe) {
			return nil, res.Err
		}
	}
	return []Result{summarize(res.CommandTag, len(res.Rows), res.Err, time.Since(start))}, nil
}

func summarize(tag pgconn.CommandTag, rows int, err error, d time.Duration) Result {
	if err != nil {
		r := Result{Success: false, Error: err.Error(), DurationNs: d.Nanoseconds()}
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			r.ErrorCode, r.Error = pe.Code, pe.Message
		}
		return r
	}
	r := Result{Success: true, Tag: tag.String(), Rows: uint64(rows), DurationNs: d.Nanoseconds()}
	if n, ok := tagCount(r.Tag); ok {
		r.Rows = n
	}
	return r
}

// tagCount reads the count at the end of a command tag, as the agent does.
func tagCount(tag string) (uint64, bool) {
	i := strings.LastIndexByte(tag, ' ')
	if i <= 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(tag[i+1:], 10, 64)
	return n, err == nil
}

// compare says how two result lists differ, "" when they agree.
func compare(rec, got []Result) string {
	if len(rec) != len(got) {
		return fmt.Sprintf("%d results recorded, %d now", len(rec), len(got))
	}
	var diffs []string
	for i := range rec {
		a, b := rec[i], got[i]
		prefix := ""
		if len(rec) > 1 {
			prefix = fmt.Sprintf("result %d: ", i+1)
		}
		switch {
		case a.Success != b.Success:
			diffs = append(diffs, prefix+"recorded "+a.Summary()+", now "+b.Summary())
		case !a.Success && a.ErrorCode != b.ErrorCode:
			diffs = append(diffs, fmt.Sprintf("%serror code recorded %s, now %s", prefix, a.ErrorCode, b.ErrorCode))
		case a.Success && a.Tag != b.Tag:
			diffs = append(diffs, fmt.Sprintf("%scommand tag recorded %q, now %q", prefix, a.Tag, b.Tag))
		case a.Success && a.Rows != b.Rows:
			diffs = append(diffs, fmt.Sprintf("%srows recorded %d, now %d", prefix, a.Rows, b.Rows))
		}
	}
	return strings.Join(diffs, "; ")
}

// redactDSN keeps a password out of the report.
func redactDSN(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return fmt.Sprintf("%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}

// WriteText prints the differences and a summary line.
func (r *Report) WriteText(w io.Writer) error {
	for _, o := range r.Outcomes {
		if o.Difference == "" {
			continue
		}
		fmt.Fprintf(w, "[%d] %s\n      differs: %s\n", o.EI, oneLine(o.Statement), o.Difference)
	}
	_, err := fmt.Fprintf(w, "%d statements of session %s replayed on %s in %s: %d differences\n",
		r.Statements, r.SID, r.Target, r.Elapsed.Round(time.Millisecond), r.Differences)
	return err
}

// progress draws "[#####     ] 120/400 statements, 0 differences".
type progress struct {
	w     io.Writer
	total int
	last  time.Time
}

func newProgress(w io.Writer, total int) *progress { return &progress{w: w, total: total} }

func (p *progress) step(n, diffs int) {
	if p.w == nil || p.total == 0 {
		return
	}
	if n < p.total && time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	const width = 30
	filled := n * width / p.total
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d statements, %d differences", strings.Repeat("#", filled), strings.Repeat(" ", width-filled), n, p.total, diffs)
}

func (p *progress) done() {
	if p.w != nil && p.total > 0 {
		fmt.Fprintln(p.w)
	}
}
