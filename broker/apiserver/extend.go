package apiserver

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/login"
)

// UserHandler serves an operation for a caller whose user certificate was
// verified.
type UserHandler func(w http.ResponseWriter, r *http.Request, id identity.Identity)

// HandleUser mounts an operation that needs a verified user certificate,
// so parts of the broker outside this package (access requests, locks)
// serve their own paths with the same authentication and audit.
func (s *Server) HandleUser(pattern string, h UserHandler) {
	s.mux.HandleFunc(pattern, s.user(userHandler(h)))
}

// HandleEditor mounts an admin operation: the caller's certificate must
// carry the editor role.
func (s *Server) HandleEditor(pattern string, h UserHandler) {
	s.mux.HandleFunc(pattern, s.user(func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		if !slices.Contains(id.Roles, access.RoleEditor) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("%s %s needs the %s role; user %s holds [%s]",
				r.Method, r.URL.Path, access.RoleEditor, id.User, strings.Join(id.Roles, ", ")), 0)
			return
		}
		h(w, r, id)
	}))
}

// Decode reads a JSON body strictly; on failure it has answered already.
func Decode(w http.ResponseWriter, r *http.Request, v any) bool { return decode(w, r, v) }

// Respond answers v, or err with the status it calls for (state errors:
// 404, 409, 400; login refusals their own).
func Respond(w http.ResponseWriter, v any, err error) {
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// WriteError answers an error with a status.
func WriteError(w http.ResponseWriter, status int, msg string) { writeError(w, status, msg, 0) }

// RequestMeta is what the audit trail records of a request.
func RequestMeta(r *http.Request) login.Meta { return meta(r) }

// Handle mounts a handler that does its own authentication, such as the
// web UI's pages, on the API's listener. The API's own paths keep theirs:
// a pattern more specific than another wins in the mux.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// VisibleDatabases is what GET /v1/databases answers id: the live
// databases some role of id may open a session to, and when there are
// none, why (an api.Empty* reason).
func (s *Server) VisibleDatabases(id identity.Identity) ([]api.Database, string) {
	return visibleDatabases(s.store, s.admin, id)
}
