package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/events"
)

// Session is one database session as the audit trail tells it.
type Session struct {
	SID        string    `json:"sid"`
	User       string    `json:"user"`
	Roles      []string  `json:"roles,omitempty"`
	Database   string    `json:"db_service"`
	Protocol   string    `json:"db_protocol,omitempty"`
	DBUser     string    `json:"db_user,omitempty"`
	DBName     string    `json:"db_name,omitempty"`
	ClientAddr string    `json:"client_addr,omitempty"`
	Start      time.Time `json:"start"`
	// End is zero while the session is live.
	End      time.Time     `json:"end,omitzero"`
	Duration time.Duration `json:"duration_ns,omitempty"`
	// Statements, Rows and Errors are the session's totals once it ended;
	// while it is live, what its results said so far.
	Statements uint64 `json:"statements"`
	Rows       uint64 `json:"rows"`
	Errors     uint64 `json:"errors"`
	EndReason  string `json:"end_reason,omitempty"`
	// Denied is set when the session was refused at its start; Error then
	// says why.
	Denied bool   `json:"denied,omitempty"`
	Error  string `json:"error,omitempty"`
	// LastActivity is the time of the last event seen of the session.
	LastActivity time.Time `json:"last_activity"`
}

// Live reports whether the session has not ended (and was not refused).
func (s Session) Live() bool { return s.End.IsZero() && !s.Denied }

// Filter selects sessions.
type Filter struct {
	// LiveOnly keeps the sessions that have not ended.
	LiveOnly bool
	User     string
	Database string
}

func (f Filter) keep(s *Session) bool {
	return (!f.LiveOnly || s.Live()) &&
		(f.User == "" || s.User == f.User) &&
		(f.Database == "" || s.Database == f.Database)
}

// projectionTypes are the event types the session list is built from:
// the start and end of every session, and results and terminations to
// count while it is live. Statement events themselves are not read.
var projectionTypes = []string{"db.session.start", "db.session.end", "db.session.result", "db.session.terminate"}

// Projection builds sessions from the events it is given.
type Projection struct {
	byID map[string]*Session
}

// NewProjection returns an empty projection.
func NewProjection() *Projection { return &Projection{byID: map[string]*Session{}} }

// record is the union of the event fields the projection and replay read.
type record struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Code       string    `json:"code"`
	Time       time.Time `json:"time"`
	User       string    `json:"user"`
	Roles      []string  `json:"roles"`
	SID        string    `json:"sid"`
	EI         uint64    `json:"ei"`
	Service    string    `json:"db_service"`
	Protocol   string    `json:"db_protocol"`
	DBUser     string    `json:"db_user"`
	DBName     string    `json:"db_name"`
	Success    *bool     `json:"success"`
	Error      string    `json:"error"`
	ClientAddr string    `json:"client_addr"`
	Rule       string    `json:"rule"`
	Reason     string    `json:"reason"`
	Message    string    `json:"message"`
	Statements uint64    `json:"db_statements"`
	Rows       uint64    `json:"db_rows"`
	Errors     uint64    `json:"db_errors"`
	DurationNs int64     `json:"db_duration_ns"`
	Query      string    `json:"db_query"`
	Params     []string  `json:"db_query_parameters"`
	StmtName   string    `json:"db_statement_name"`
	PortalName string    `json:"db_portal_name"`
	ParamOIDs  []uint32  `json:"db_parameter_oids"`
	Tag        string    `json:"db_command_tag"`
	ErrorCode  string    `json:"db_error_code"`
	ErrorMsg   string    `json:"db_error_message"`
	Direction  string    `json:"direction"`
	CopyPhase  string    `json:"db_copy_phase"`
	CopyBytes  uint64    `json:"db_copy_bytes"`
	LockID     string    `json:"lock_id"`
	RequestID  string    `json:"request_id"`
}

// Apply adds one stored event (its JSON) to the projection. Events of
// other types are ignored.
func (p *Projection) Apply(data []byte) error {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("sessions: event does not decode: %w", err)
	}
	p.apply(&r)
	return nil
}

func (p *Projection) apply(r *record) {
	if r.SID == "" {
		return
	}
	s := p.byID[r.SID]
	if s == nil {
		s = &Session{SID: r.SID, User: r.User, Roles: r.Roles, Database: r.Service, Protocol: r.Protocol,
			DBUser: r.DBUser, DBName: r.DBName, Start: r.Time}
		p.byID[r.SID] = s
	}
	if r.Time.After(s.LastActivity) {
		s.LastActivity = r.Time
	}
	switch r.Type {
	case "db.session.start":
		s.Start, s.ClientAddr = r.Time, r.ClientAddr
		s.User, s.Roles = r.User, r.Roles
		s.Database, s.Protocol, s.DBUser, s.DBName = r.Service, r.Protocol, r.DBUser, r.DBName
		if r.Success != nil && !*r.Success {
			s.Denied, s.Error = true, r.Error
			s.End, s.EndReason = r.Time, "denied"
		}
	case "db.session.result":
		if s.End.IsZero() {
			s.Statements++
			s.Rows += r.Rows
			if r.Success != nil && !*r.Success {
				s.Errors++
			}
		}
	case "db.session.end":
		s.End, s.EndReason = r.Time, r.Reason
		s.Statements, s.Rows, s.Errors = r.Statements, r.Rows, r.Errors
		s.Duration = time.Duration(r.DurationNs)
		if r.DBUser != "" {
			s.DBUser, s.DBName = r.DBUser, r.DBName
		}
	}
}

// Sessions returns the sessions f keeps, by start time then id.
func (p *Projection) Sessions(f Filter) []Session {
	out := make([]Session, 0, len(p.byID))
	for _, s := range p.byID {
		if f.keep(s) {
			c := *s
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.Before(out[j].Start)
		}
		return out[i].SID < out[j].SID
	})
	return out
}

// List reads the AUDIT stream as it is now (the session events only:
// starts, ends, results, terminations) and returns the sessions f keeps.
func List(ctx context.Context, js jetstream.JetStream, f Filter) ([]Session, error) {
	filters := make([]string, len(projectionTypes))
	for i, t := range projectionTypes {
		filters[i] = events.TypeFilter(t)
	}
	p := NewProjection()
	err := read(ctx, js, filters, func(data []byte) error {
		var r record
		if err := json.Unmarshal(data, &r); err != nil {
			return nil // not ours to judge; exporters dead-letter such events
		}
		p.apply(&r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p.Sessions(f), nil
}

// read delivers every message stored under filters, in stream order, up
// to the stream's last message when read began.
func read(ctx context.Context, js jetstream.JetStream, filters []string, fn func(data []byte) error) error {
	stream, err := js.Stream(ctx, events.AuditStream)
	if err != nil {
		return fmt.Errorf("sessions: stream %s: %w", events.AuditStream, err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("sessions: consumer on %s: %w", events.AuditStream, err)
	}
	info := cons.CachedInfo()
	if info == nil {
		if info, err = cons.Info(ctx); err != nil {
			return err
		}
	}
	pending := info.NumPending
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 1024)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("sessions: read %s: %w", events.AuditStream, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			if err := fn(msg.Data()); err != nil {
				return err
			}
			meta, err := msg.Metadata()
			if err != nil {
				return err
			}
			pending = meta.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("sessions: read %s: %w", events.AuditStream, err)
		}
		if n == 0 {
			return fmt.Errorf("sessions: read %s: %d messages announced but none came", events.AuditStream, pending)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}
