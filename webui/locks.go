package webui

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/locks"
	"github.com/tollgate-db/tollgate/broker/state"
)

// lockAdmin is the API's lock operations acting as the caller, so a lock
// placed here is the same STATE change, with the same actor in the audit
// trail, as `tollgate locks add` over the API.
func (u *UI) lockAdmin(c *caller) locks.Local {
	return locks.Local{Store: u.o.Store, By: state.Actor{User: c.id.User, Roles: c.id.Roles}}
}

// lockList lists the locks in force with a form to place one (editors,
// as GET /v1/admin/locks).
func (u *UI) lockList(w http.ResponseWriter, r *http.Request, c *caller) {
	u.lockPage(w, r, c, http.StatusOK, "")
}

func (u *UI) lockPage(w http.ResponseWriter, r *http.Request, c *caller, status int, msg string) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	ls, err := u.lockAdmin(c).Locks(r.Context())
	v := u.view(c, "Locks", "locks", ls)
	v.Error = msg
	if err != nil {
		v.Error = err.Error()
	}
	u.render(w, status, "locks", v)
}

// addLock places a lock on a user, a role or one session; agents end the
// live sessions it matches at once. A lock on a session comes from that
// session's page, and leads back to it.
func (u *UI) addLock(w http.ResponseWriter, r *http.Request, c *caller) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	req := api.AddLockRequest{TargetUser: r.PostFormValue("user"), TargetRole: r.PostFormValue("role"),
		TargetSession: r.PostFormValue("session"), Message: r.PostFormValue("message")}
	if v := strings.TrimSpace(r.PostFormValue("ttl")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			u.lockPage(w, r, c, http.StatusBadRequest, "For how long: want a duration such as 30m or 4h.")
			return
		}
		req.TTL = api.Duration(d)
	}
	if _, err := u.lockAdmin(c).AddLock(r.Context(), req); err != nil {
		u.lockPage(w, r, c, statusOf(err), err.Error())
		return
	}
	if sid := strings.TrimSpace(req.TargetSession); sid != "" && r.PostFormValue("back") == "session" {
		http.Redirect(w, r, "/sessions/"+url.PathEscape(sid)+"?ended=1", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/locks", http.StatusSeeOther)
}

// removeLock lifts a lock.
func (u *UI) removeLock(w http.ResponseWriter, r *http.Request, c *caller) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	if err := u.lockAdmin(c).RemoveLock(r.Context(), r.PathValue("id")); err != nil {
		u.lockPage(w, r, c, statusOf(err), err.Error())
		return
	}
	http.Redirect(w, r, "/locks", http.StatusSeeOther)
}
