package sessions

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
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

// Projection builds sessions from the events it is given.
type Projection struct {
	byID map[string]*Session
}

// NewProjection returns an empty projection.
func NewProjection() *Projection { return &Projection{byID: map[string]*Session{}} }

// sessionFields are the event fields a session's summary is made of: what
// the index decodes of every event it reads.
type sessionFields struct {
	Type       string    `json:"type"`
	Time       time.Time `json:"time"`
	User       string    `json:"user"`
	Roles      []string  `json:"roles"`
	SID        string    `json:"sid"`
	Service    string    `json:"db_service"`
	Protocol   string    `json:"db_protocol"`
	DBUser     string    `json:"db_user"`
	DBName     string    `json:"db_name"`
	Success    *bool     `json:"success"`
	Error      string    `json:"error"`
	ClientAddr string    `json:"client_addr"`
	Reason     string    `json:"reason"`
	Statements uint64    `json:"db_statements"`
	Rows       uint64    `json:"db_rows"`
	Errors     uint64    `json:"db_errors"`
	DurationNs int64     `json:"db_duration_ns"`
}

// record is the union of the event fields the projection and replay read.
type record struct {
	sessionFields
	ID         string   `json:"id"`
	Code       string   `json:"code"`
	EI         uint64   `json:"ei"`
	Rule       string   `json:"rule"`
	Message    string   `json:"message"`
	Query      string   `json:"db_query"`
	Params     []string `json:"db_query_parameters"`
	StmtName   string   `json:"db_statement_name"`
	PortalName string   `json:"db_portal_name"`
	ParamOIDs  []uint32 `json:"db_parameter_oids"`
	Tag        string   `json:"db_command_tag"`
	ErrorCode  string   `json:"db_error_code"`
	ErrorMsg   string   `json:"db_error_message"`
	Direction  string   `json:"direction"`
	CopyPhase  string   `json:"db_copy_phase"`
	CopyBytes  uint64   `json:"db_copy_bytes"`
	LockID     string   `json:"lock_id"`
	RequestID  string   `json:"request_id"`
}

// Apply adds one stored event (its JSON) to the projection. Events
// outside a session are ignored; a session's start, results and end make
// its summary, every one of its events its last activity.
func (p *Projection) Apply(data []byte) error {
	var r sessionFields
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("sessions: event does not decode: %w", err)
	}
	p.apply(&r)
	return nil
}

func (p *Projection) apply(r *sessionFields) {
	if r.SID == "" {
		return
	}
	s := p.byID[r.SID]
	if s == nil {
		s = newSession(r)
		p.byID[r.SID] = s
	}
	s.apply(r)
}

// newSession is the session r is the first event read of.
func newSession(r *sessionFields) *Session {
	return &Session{SID: r.SID, User: r.User, Roles: r.Roles, Database: r.Service, Protocol: r.Protocol,
		DBUser: r.DBUser, DBName: r.DBName, Start: r.Time}
}

// apply adds one of the session's events to its summary.
func (s *Session) apply(r *sessionFields) {
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
