// Package locks is the admin side of locks: place, list and remove them in
// the broker's state, locally or over the API. A lock targets a user, a
// role (every holder) or one session; agents watching STATE end the live
// sessions it matches at once and refuse new ones while it holds
// (agent.Lifecycle), and the broker refuses the locked user's API calls.
package locks

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/apiserver"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// MaxMessage bounds a lock's message: it is sent to clients in their
// protocol's error messages.
const MaxMessage = 512

// Admin is what `tollgate locks` needs: Local works on a store directly,
// *api.Client on a remote broker.
type Admin interface {
	Locks(ctx context.Context) ([]api.Lock, error)
	AddLock(ctx context.Context, req api.AddLockRequest) (*api.Lock, error)
	RemoveLock(ctx context.Context, id string) error
}

// Local is Admin over a broker's store, acting as By.
type Local struct {
	Store *state.Store
	By    state.Actor
}

var _ Admin = Local{}
var _ Admin = (*api.Client)(nil)

// Locks lists every lock in force (lapsed ones are left out).
func (l Local) Locks(context.Context) ([]api.Lock, error) {
	now := time.Now()
	out := []api.Lock{}
	for _, k := range l.Store.Locks() {
		if k.Active(now) {
			out = append(out, ToAPI(k))
		}
	}
	return out, nil
}

// AddLock places a lock.
func (l Local) AddLock(ctx context.Context, req api.AddLockRequest) (*api.Lock, error) {
	nl := state.NewLock{TargetUser: strings.TrimSpace(req.TargetUser), TargetRole: strings.TrimSpace(req.TargetRole),
		TargetSession: strings.TrimSpace(req.TargetSession), Message: strings.TrimSpace(req.Message)}
	if len(nl.Message) > MaxMessage {
		return nil, fmt.Errorf("%w: lock message is %d bytes, at most %d", state.ErrInvalid, len(nl.Message), MaxMessage)
	}
	if nl.TargetSession != "" {
		if err := events.ValidToken(nl.TargetSession); err != nil {
			return nil, fmt.Errorf("%w: session id: %v", state.ErrInvalid, err)
		}
	}
	switch ttl := req.TTL.Std(); {
	case ttl < 0:
		return nil, fmt.Errorf("%w: lock ttl %s is negative", state.ErrInvalid, ttl)
	case ttl > 0:
		nl.Expires = time.Now().Add(ttl)
	}
	k, err := l.Store.CreateLock(ctx, l.By, nl)
	if err != nil {
		return nil, err
	}
	out := ToAPI(k)
	return &out, nil
}

// RemoveLock removes a lock.
func (l Local) RemoveLock(ctx context.Context, id string) error {
	if err := events.ValidToken(id); err != nil {
		return fmt.Errorf("%w: lock id: %v", state.ErrInvalid, err)
	}
	return l.Store.DeleteLock(ctx, l.By, id)
}

// ToAPI is the API form of a lock.
func ToAPI(k state.Lock) api.Lock {
	return api.Lock{ID: k.ID, TargetUser: k.TargetUser, TargetRole: k.TargetRole, TargetSession: k.TargetSession,
		Message: k.Message, Expires: k.Expires, Created: k.Created, CreatedBy: k.CreatedBy}
}

// Mount serves api.PathAdminLocks on the broker's API (editor role).
func Mount(srv *apiserver.Server, store *state.Store) {
	as := func(id identity.Identity) Local {
		return Local{Store: store, By: state.Actor{User: id.User, Roles: id.Roles}}
	}
	srv.HandleEditor("GET "+api.PathAdminLocks, func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		out, err := as(id).Locks(r.Context())
		apiserver.Respond(w, out, err)
	})
	srv.HandleEditor("POST "+api.PathAdminLocks, func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		var req api.AddLockRequest
		if !apiserver.Decode(w, r, &req) {
			return
		}
		out, err := as(id).AddLock(r.Context(), req)
		apiserver.Respond(w, out, err)
	})
	srv.HandleEditor("DELETE "+api.PathAdminLocks+"/{id}", func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		if err := as(id).RemoveLock(r.Context(), r.PathValue("id")); err != nil {
			apiserver.Respond(w, nil, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
