package state

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tollgate-db/tollgate/broker/identity"
)

// certBackdate is how far the CAs set NotBefore before the moment they
// sign (broker/ca): a certificate's issue time is its NotBefore plus this.
const certBackdate = time.Minute

// ErrUserRemoved is wrapped by the error of CurrentIdentity for a
// certificate whose user was removed after it was issued.
var ErrUserRemoved = errors.New("user no longer exists")

// RemovedUserError says that the user a certificate names was removed.
type RemovedUserError struct {
	User    string
	Removed time.Time
	// Recreated is set when a user of the same name exists again: the
	// certificate still belonged to the one removed.
	Recreated bool
}

func (e *RemovedUserError) Error() string {
	at := e.Removed.UTC().Format(time.RFC3339)
	if e.Recreated {
		return fmt.Sprintf("user %s no longer exists: it was removed at %s, after this certificate was issued, and created again since; log in again", e.User, at)
	}
	return fmt.Sprintf("user %s no longer exists (removed at %s)", e.User, at)
}

// Unwrap makes errors.Is(err, ErrUserRemoved) hold.
func (e *RemovedUserError) Unwrap() error { return ErrUserRemoved }

// CurrentIdentity is what a certificate's identity is worth at now: a
// signed certificate outlives changes to its user, so the projection
// decides. A certificate issued before its user was removed is refused
// with a *RemovedUserError. For a user that exists, the roles are cut to
// those the user holds now plus those granted by the approved, unexpired
// access requests the certificate carries. A name that was never a user
// (an identity file signed with explicit roles, e.g. for a bot) keeps its
// roles: no user record says otherwise.
func (p *Projection) CurrentIdentity(now time.Time, id identity.Identity) (identity.Identity, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	u, exists := p.users[id.User]
	if at, ok := p.removed[id.User]; ok && at.After(id.Issued.Add(certBackdate)) {
		return identity.Identity{}, &RemovedUserError{User: id.User, Removed: at, Recreated: exists}
	}
	if !exists {
		return id, nil
	}
	held := func(role string) bool {
		if slices.Contains(u.Roles, role) {
			return true
		}
		for _, rid := range id.AccessRequests {
			r, ok := p.requests[rid]
			if ok && r.State == RequestApproved && r.Requester == id.User && now.Before(r.Expires) && slices.Contains(r.Roles, role) {
				return true
			}
		}
		return false
	}
	if !slices.ContainsFunc(id.Roles, func(r string) bool { return !held(r) }) {
		return id, nil
	}
	roles := make([]string, 0, len(id.Roles))
	for _, r := range id.Roles {
		if held(r) {
			roles = append(roles, r)
		}
	}
	id.Roles = roles
	return id, nil
}

// DroppedRoles are the roles of cert that cur no longer has.
func DroppedRoles(cert, cur identity.Identity) []string {
	var out []string
	for _, r := range cert.Roles {
		if !slices.Contains(cur.Roles, r) {
			out = append(out, r)
		}
	}
	return out
}
