package webui

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/apiserver"
	"github.com/tollgate-db/tollgate/broker/state"
)

// admin is the API's admin operations acting as the caller
// (admin.Service.As, what the API's editor handlers call), so each change
// is the same STATE event with the same actor.
func (u *UI) admin(r *http.Request, c *caller) api.Admin {
	return u.o.Admin.As(state.Actor{User: c.id.User, Roles: c.id.Roles}, apiserver.RequestMeta(r).Source)
}

type usersData struct {
	Users []api.User
	// Added is the user just added, with the invite shown this once.
	Added *api.AddUserResponse
}

func (u *UI) userList(w http.ResponseWriter, r *http.Request, c *caller) {
	u.usersPage(w, r, c, http.StatusOK, "", nil)
}

func (u *UI) usersPage(w http.ResponseWriter, r *http.Request, c *caller, status int, msg string, added *api.AddUserResponse) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	us, err := u.admin(r, c).Users(r.Context())
	v := u.view(c, "Users", "users", usersData{Users: us, Added: added})
	v.Error = msg
	if err != nil {
		v.Error = err.Error()
	}
	u.render(w, status, "users", v)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// addUser adds a user as `tollgate users add` does and shows the invite
// once: it is not stored, only its hash is.
func (u *UI) addUser(w http.ResponseWriter, r *http.Request, c *caller) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	res, err := u.admin(r, c).AddUser(r.Context(), api.AddUserRequest{Name: strings.TrimSpace(r.PostFormValue("name")),
		Roles: splitList(r.PostFormValue("roles")), DBUsers: splitList(r.PostFormValue("db_users")), DBNames: splitList(r.PostFormValue("db_names"))})
	if err != nil {
		u.usersPage(w, r, c, statusOf(err), err.Error(), nil)
		return
	}
	u.usersPage(w, r, c, http.StatusOK, "", res)
}

func (u *UI) removeUser(w http.ResponseWriter, r *http.Request, c *caller) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	if err := u.admin(r, c).RemoveUser(r.Context(), r.PathValue("name")); err != nil {
		u.usersPage(w, r, c, statusOf(err), err.Error(), nil)
		return
	}
	http.Redirect(w, r, "/users?removed="+url.QueryEscape(r.PathValue("name")), http.StatusSeeOther)
}

type rolesData struct {
	Roles   []api.Role
	YAML    string
	Results []api.RoleResult
}

func (u *UI) roleList(w http.ResponseWriter, r *http.Request, c *caller) {
	u.rolesPage(w, r, c, http.StatusOK, "", rolesData{})
}

func (u *UI) rolesPage(w http.ResponseWriter, r *http.Request, c *caller, status int, msg string, d rolesData) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	var err error
	d.Roles, err = u.admin(r, c).Roles(r.Context())
	v := u.view(c, "Roles", "roles", d)
	v.Error = msg
	if err != nil {
		v.Error = err.Error()
	}
	u.render(w, status, "roles", v)
}

// upsertRoles creates or replaces roles from YAML, as `tollgate roles
// create -f` does.
func (u *UI) upsertRoles(w http.ResponseWriter, r *http.Request, c *caller) {
	if !c.editor() {
		u.forbidden(w, c, "editor")
		return
	}
	y := r.PostFormValue("yaml")
	res, err := u.admin(r, c).UpsertRoles(r.Context(), y)
	if err != nil {
		u.rolesPage(w, r, c, statusOf(err), fmt.Sprintf("Roles not changed: %v", err), rolesData{YAML: y})
		return
	}
	u.rolesPage(w, r, c, http.StatusOK, "", rolesData{Results: res})
}
