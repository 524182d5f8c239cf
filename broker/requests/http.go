package requests

import (
	"errors"
	"net/http"
	"slices"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/apiserver"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/login"
)

// Mount serves the workflow's API paths (api.PathRequests,
// api.PathReissueAccess) on the broker's API. certify answers an issued
// certificate with the CAs a client needs (admin.Service.Certificate).
func Mount(srv *apiserver.Server, svc *Service, ls *login.Service, certify func(*login.Issued) (*api.Certificate, error)) {
	srv.HandleUser("POST "+api.PathRequests, func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		var req api.CreateAccessRequest
		if !apiserver.Decode(w, r, &req) {
			return
		}
		out, err := svc.Create(r.Context(), id, CreateRequest{Roles: req.Roles, Reason: req.Reason, Duration: req.MaxDuration.Std()})
		respond(w, out, err)
	})
	srv.HandleUser("GET "+api.PathRequests, func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		out := []api.AccessRequest{}
		for _, req := range svc.Visible(id) {
			out = append(out, ToAPI(req))
		}
		apiserver.Respond(w, out, nil)
	})
	srv.HandleUser("GET "+api.PathRequests+"/{id}", func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		req, ok := svc.Get(r.PathValue("id"))
		if !ok || !svc.CanSee(id, req) {
			apiserver.WriteError(w, http.StatusNotFound, "access request "+r.PathValue("id")+" not found")
			return
		}
		respond(w, req, nil)
	})
	srv.HandleUser("POST "+api.PathRequests+"/{id}/review", func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		var req api.ReviewAccessRequest
		if !apiserver.Decode(w, r, &req) {
			return
		}
		out, err := svc.Review(r.Context(), id, r.PathValue("id"), req.Verdict, req.Reason)
		respond(w, out, err)
	})
	srv.HandleUser("POST "+api.PathReissueAccess, func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		var req api.ReissueAccessRequest
		if !apiserver.Decode(w, r, &req) {
			return
		}
		pub, err := api.DecodePublicKey(req.PublicKey)
		if err != nil {
			apiserver.WriteError(w, http.StatusBadRequest, "reissue: "+err.Error())
			return
		}
		g, err := svc.Grant(id.User, req.RequestIDs)
		if err != nil {
			respond(w, nil, err)
			return
		}
		is, err := ls.ReissueWithGrant(r.Context(), id, pub, req.TTL.Std(), g.Roles, g.RequestIDs, g.Until, apiserver.RequestMeta(r))
		if err != nil {
			apiserver.Respond(w, nil, err)
			return
		}
		cert, err := certify(is)
		apiserver.Respond(w, cert, err)
	})
}

func respond(w http.ResponseWriter, r any, err error) {
	if errors.Is(err, ErrForbidden) {
		apiserver.WriteError(w, http.StatusForbidden, err.Error())
		return
	}
	if req, ok := r.(Request); ok && err == nil {
		apiserver.Respond(w, ToAPI(req), nil)
		return
	}
	apiserver.Respond(w, r, err)
}

// Visible returns the requests id may see: their own, those they may
// review, and every request for an editor.
func (s *Service) Visible(id identity.Identity) []Request {
	var out []Request
	for _, r := range s.List() {
		if s.CanSee(id, r) {
			out = append(out, r)
		}
	}
	return out
}

// CanSee reports whether id may see request r.
func (s *Service) CanSee(id identity.Identity, r Request) bool {
	if r.Requester == id.User || slices.Contains(id.Roles, access.RoleEditor) {
		return true
	}
	roles, _ := s.store.ResolveRoles(id.Roles)
	for _, role := range r.Roles {
		if !access.CanReview(id, roles, role) {
			return false
		}
	}
	return true
}

// ToAPI is the API form of a request.
func ToAPI(r Request) api.AccessRequest {
	out := api.AccessRequest{ID: r.ID, Requester: r.Requester, Roles: r.Roles, Reason: r.Reason, State: r.State,
		Created: r.Created, Expires: r.Expires, PendingUntil: r.PendingUntil, ApprovalsNeeded: r.ApprovalsNeeded,
		Updated: r.Updated, UpdatedBy: r.UpdatedBy, UpdateReason: r.UpdateReason}
	for _, v := range r.Reviews {
		out.Reviews = append(out.Reviews, api.AccessReview{Reviewer: v.Reviewer, Verdict: v.Verdict, Reason: v.Reason, Time: v.Time})
	}
	return out
}
