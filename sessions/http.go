package sessions

import (
	"net/http"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/apiserver"
	"github.com/tollgate-db/tollgate/broker/identity"
)

// Mount serves the session list and timelines to editors on the broker's
// API, so `tollgate sessions` works with --identity too:
//
//	GET /v1/admin/sessions?live=true&user=U&db=NAME   → []Session
//	GET /v1/admin/sessions/{sid}                      → Timeline
func Mount(srv *apiserver.Server, js jetstream.JetStream) {
	srv.HandleEditor("GET "+api.PathAdminSessions, func(w http.ResponseWriter, r *http.Request, _ identity.Identity) {
		q := r.URL.Query()
		ss, err := List(r.Context(), js, Filter{LiveOnly: q.Get("live") == "true", User: q.Get("user"), Database: q.Get("db")})
		if ss == nil {
			ss = []Session{}
		}
		apiserver.Respond(w, ss, err)
	})
	srv.HandleEditor("GET "+api.PathAdminSessions+"/{sid}", func(w http.ResponseWriter, r *http.Request, _ identity.Identity) {
		t, err := Load(r.Context(), js, r.PathValue("sid"))
		if err != nil {
			apiserver.WriteError(w, http.StatusNotFound, err.Error())
			return
		}
		apiserver.Respond(w, t, nil)
	})
}
