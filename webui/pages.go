package webui

import (
	"errors"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/requests"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/protocol"
	"github.com/tollgate-db/tollgate/sessions"
)

// sessionList lists sessions from the SESSIONS index, for editors as
// GET /v1/admin/sessions serves them.
func (u *UI) sessionList(w http.ResponseWriter, r *http.Request, c *caller) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	q := r.URL.Query()
	f := sessions.Filter{LiveOnly: q.Get("live") == "on", User: strings.TrimSpace(q.Get("user")), Database: strings.TrimSpace(q.Get("db"))}
	ss, err := sessions.List(r.Context(), u.o.JS, f)
	// Newest first, as the audit page.
	sort.SliceStable(ss, func(i, j int) bool { return ss[i].Start.After(ss[j].Start) })
	v := u.view(c, "Sessions", "sessions", map[string]any{"Sessions": ss, "F": f})
	if err != nil {
		v.Error = err.Error()
	}
	u.render(w, http.StatusOK, "sessions", v)
}

// sessionPage is a session's replay: its statements and results on a
// timeline (sessions.Load).
func (u *UI) sessionPage(w http.ResponseWriter, r *http.Request, c *caller) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	sid := r.PathValue("sid")
	t, err := sessions.Load(r.Context(), u.o.JS, sid)
	if err != nil {
		u.render(w, http.StatusNotFound, "error", u.view(c, "Session "+sid, "sessions", err.Error()))
		return
	}
	v := u.view(c, "Session "+sid, "sessions", t)
	if r.URL.Query().Get("ended") != "" {
		v.Notice = "A lock on this session is in place: its agent ends it and refuses it from now on."
	}
	u.render(w, http.StatusOK, "session", v)
}

// pendingReviews counts the pending requests the caller may still
// review: not their own, not reviewed by them, and visible to them as the
// API shows requests (requests.Service.Visible).
func (u *UI) pendingReviews(id identity.Identity) int {
	if u.o.Requests == nil {
		return 0
	}
	n := 0
	for _, r := range u.o.Requests.Visible(id) {
		if r.State == state.RequestPending && r.Requester != id.User && !reviewedBy(r, id.User) {
			n++
		}
	}
	return n
}

func reviewedBy(r requests.Request, user string) bool {
	for _, v := range r.Reviews {
		if v.Reviewer == user {
			return true
		}
	}
	return false
}

type requestRow struct {
	api.AccessRequest
	CanReview bool
}

// requestList shows the requests the caller may see, as GET
// /v1/requests does, with a review form on those they may still review.
func (u *UI) requestList(w http.ResponseWriter, r *http.Request, c *caller) {
	u.requestPage(w, c, http.StatusOK, "")
}

func (u *UI) requestPage(w http.ResponseWriter, c *caller, status int, msg string) {
	var rows []requestRow
	for _, req := range u.o.Requests.Visible(c.id) {
		rows = append(rows, requestRow{AccessRequest: requests.ToAPI(req),
			CanReview: req.State == state.RequestPending && req.Requester != c.id.User && !reviewedBy(req, c.id.User)})
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Created.After(rows[j].Created) })
	v := u.view(c, "Access requests", "requests", rows)
	v.Error = msg
	u.render(w, status, "requests", v)
}

// createRequest stores an access request through the workflow the API
// and `tg request create` use (requests.Service.Create), which checks
// that the caller's roles allow requesting each role.
func (u *UI) createRequest(w http.ResponseWriter, r *http.Request, c *caller) {
	var d time.Duration
	if v := strings.TrimSpace(r.PostFormValue("duration")); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			u.requestPage(w, c, http.StatusBadRequest, "Duration: want a duration such as 30m or 4h.")
			return
		}
	}
	_, err := u.o.Requests.Create(r.Context(), c.id, requests.CreateRequest{Roles: strings.Split(r.PostFormValue("roles"), ","),
		Reason: r.PostFormValue("reason"), Duration: d})
	if err != nil {
		u.requestPage(w, c, statusOf(err), err.Error())
		return
	}
	http.Redirect(w, r, "/requests", http.StatusSeeOther)
}

// statusOf is the status the API answers a workflow error with.
func statusOf(err error) int {
	switch {
	case errors.Is(err, requests.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, state.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, state.ErrConflict), errors.Is(err, state.ErrExists):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

// review records a verdict through the workflow the API and CLI use
// (requests.Service.Review), which checks the reviewer's roles and
// stores the event with its actor.
func (u *UI) review(w http.ResponseWriter, r *http.Request, c *caller) {
	verdict := r.PostFormValue("verdict")
	_, err := u.o.Requests.Review(r.Context(), c.id, r.PathValue("id"), verdict, r.PostFormValue("reason"))
	if err != nil {
		u.render(w, statusOf(err), "error", u.view(c, "Review refused", "requests", err.Error()))
		return
	}
	http.Redirect(w, r, "/requests", http.StatusSeeOther)
}

type dbRow struct {
	api.Database
	Labels string
	// Commands are the lines that reach the database, as tg's help
	// gives them for its protocol.
	Commands []string
}

// connectCommands are the ways to reach a database: tg db connect opens
// the protocol's own client (psql, mariadb) through a tunnel; libpq
// clients may use the service entry tg db login writes; any client may
// use a tunnel on a local port.
func connectCommands(d api.Database) []string {
	switch protocol.EngineOf(d.Protocol) {
	case protocol.Postgres:
		return []string{"tg db connect " + d.Name, "tg db login " + d.Name + ` && psql "service=tollgate-` + d.Name + `"`}
	case protocol.MySQL:
		return []string{"tg db connect " + d.Name, "tg proxy db " + d.Name + " --tunnel --port=3307 && mariadb --host=127.0.0.1 --port=3307 --skip-ssl"}
	}
	return []string{"tg proxy db " + d.Name + " --tunnel --port=11433"}
}

// databases lists what GET /v1/databases answers the caller.
func (u *UI) databases(w http.ResponseWriter, r *http.Request, c *caller) {
	dbs, reason := u.api.VisibleDatabases(c.id)
	var rows []dbRow
	for _, d := range dbs {
		var ls []string
		for k, v := range d.Labels {
			ls = append(ls, k+"="+v)
		}
		sort.Strings(ls)
		rows = append(rows, dbRow{Database: d, Labels: strings.Join(ls, ", "), Commands: connectCommands(d)})
	}
	u.render(w, http.StatusOK, "databases", u.view(c, "Databases", "databases", map[string]any{"Rows": rows, "Empty": emptyReasons[reason]}))
}

// emptyReasons say in words why GET /v1/databases is empty, so nobody is
// left guessing at a blank table.
var emptyReasons = map[string]string{
	api.EmptyNoneRegistered: "no agent has registered a database yet",
	api.EmptyNoneAllowed:    "databases exist, but none of your roles allows one; an access request can grant one",
	api.EmptyNoneLive:       "the agents of the databases you may use stopped sending heartbeats",
}
