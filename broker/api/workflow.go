package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Paths of the access-request workflow and of locks:
//
//	POST   /v1/requests               mTLS → create an access request (roles, reason, duration)
//	GET    /v1/requests               mTLS → the caller's requests and those the caller may review
//	GET    /v1/requests/{id}          mTLS → one request
//	POST   /v1/requests/{id}/review   mTLS → approve or deny (never one's own)
//	POST   /v1/reissue/access         mTLS, approved request ids → certificate with the granted roles
//	GET    /v1/admin/locks            editor → every lock
//	POST   /v1/admin/locks            editor → place a lock
//	DELETE /v1/admin/locks/{id}       editor → remove a lock
//	GET    /v1/admin/sessions         editor → sessions (live=true, user, db)
//	GET    /v1/admin/sessions/{sid}   editor → one session's timeline
const (
	PathRequests      = "/v1/requests"
	PathReissueAccess = "/v1/reissue/access"
	PathAdminLocks    = "/v1/admin/locks"
	PathAdminSessions = "/v1/admin/sessions"
)

// AccessRequest is an access request with its reviews.
type AccessRequest struct {
	ID        string    `json:"id"`
	Requester string    `json:"requester"`
	Roles     []string  `json:"roles"`
	Reason    string    `json:"reason,omitempty"`
	State     string    `json:"state"`
	Created   time.Time `json:"created"`
	// Expires is when the access granted ends.
	Expires time.Time `json:"expires"`
	// PendingUntil is when a pending request lapses without reviews.
	PendingUntil    time.Time      `json:"pending_until,omitzero"`
	ApprovalsNeeded int            `json:"approvals_needed"`
	Reviews         []AccessReview `json:"reviews,omitempty"`
	Updated         time.Time      `json:"updated,omitzero"`
	UpdatedBy       string         `json:"updated_by,omitempty"`
	UpdateReason    string         `json:"update_reason,omitempty"`
}

// AccessReview is one reviewer's verdict.
type AccessReview struct {
	Reviewer string    `json:"reviewer"`
	Verdict  string    `json:"verdict"`
	Reason   string    `json:"reason,omitempty"`
	Time     time.Time `json:"time"`
}

// CreateAccessRequest asks for roles for a while.
type CreateAccessRequest struct {
	Roles  []string `json:"roles"`
	Reason string   `json:"reason,omitempty"`
	// MaxDuration is how long the access should last; empty means the
	// longest the requester's roles allow.
	MaxDuration Duration `json:"max_duration,omitempty"`
}

// ReviewAccessRequest is a verdict: approve or deny.
type ReviewAccessRequest struct {
	Verdict string `json:"verdict"`
	Reason  string `json:"reason,omitempty"`
}

// ReissueAccessRequest asks for a certificate with the roles of approved
// requests, valid no longer than the shortest of their grants.
type ReissueAccessRequest struct {
	PublicKey  string   `json:"public_key"`
	RequestIDs []string `json:"request_ids"`
	TTL        Duration `json:"ttl,omitempty"`
}

// Lock stops a user, every holder of a role, or one session.
type Lock struct {
	ID            string    `json:"id"`
	TargetUser    string    `json:"user,omitempty"`
	TargetRole    string    `json:"role,omitempty"`
	TargetSession string    `json:"session,omitempty"`
	Message       string    `json:"message,omitempty"`
	Expires       time.Time `json:"expires,omitzero"`
	Created       time.Time `json:"created"`
	CreatedBy     string    `json:"created_by"`
}

// AddLockRequest places a lock on exactly one target.
type AddLockRequest struct {
	TargetUser    string   `json:"user,omitempty"`
	TargetRole    string   `json:"role,omitempty"`
	TargetSession string   `json:"session,omitempty"`
	Message       string   `json:"message,omitempty"`
	TTL           Duration `json:"ttl,omitempty"`
}

// CreateAccessRequest creates an access request for the caller.
func (c *Client) CreateAccessRequest(ctx context.Context, req CreateAccessRequest) (*AccessRequest, error) {
	var out AccessRequest
	return &out, c.do(ctx, http.MethodPost, PathRequests, req, &out)
}

// AccessRequests lists the caller's requests and those the caller may
// review (every request for an editor).
func (c *Client) AccessRequests(ctx context.Context) ([]AccessRequest, error) {
	var out []AccessRequest
	return out, c.do(ctx, http.MethodGet, PathRequests, nil, &out)
}

// AccessRequest returns one request.
func (c *Client) AccessRequest(ctx context.Context, id string) (*AccessRequest, error) {
	var out AccessRequest
	return &out, c.do(ctx, http.MethodGet, PathRequests+"/"+url.PathEscape(id), nil, &out)
}

// ReviewAccessRequest approves or denies a request.
func (c *Client) ReviewAccessRequest(ctx context.Context, id string, req ReviewAccessRequest) (*AccessRequest, error) {
	var out AccessRequest
	return &out, c.do(ctx, http.MethodPost, PathRequests+"/"+url.PathEscape(id)+"/review", req, &out)
}

// ReissueAccess returns a certificate with the roles of approved requests.
func (c *Client) ReissueAccess(ctx context.Context, req ReissueAccessRequest) (*Certificate, error) {
	var out Certificate
	return &out, c.do(ctx, http.MethodPost, PathReissueAccess, req, &out)
}

// Locks lists every lock.
func (c *Client) Locks(ctx context.Context) ([]Lock, error) {
	var out []Lock
	return out, c.do(ctx, http.MethodGet, PathAdminLocks, nil, &out)
}

// AddLock places a lock.
func (c *Client) AddLock(ctx context.Context, req AddLockRequest) (*Lock, error) {
	var out Lock
	return &out, c.do(ctx, http.MethodPost, PathAdminLocks, req, &out)
}

// RemoveLock removes a lock.
func (c *Client) RemoveLock(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, PathAdminLocks+"/"+url.PathEscape(id), nil, nil)
}

// Sessions decodes the session list (sessions.Session values) into out.
// The types live in package sessions, which clients that only log in need
// not carry.
func (c *Client) Sessions(ctx context.Context, live bool, user, db string, out any) error {
	q := url.Values{}
	if live {
		q.Set("live", "true")
	}
	if user != "" {
		q.Set("user", user)
	}
	if db != "" {
		q.Set("db", db)
	}
	path := PathAdminSessions
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// SessionTimeline decodes one session's timeline (a sessions.Timeline)
// into out.
func (c *Client) SessionTimeline(ctx context.Context, sid string, out any) error {
	return c.do(ctx, http.MethodGet, PathAdminSessions+"/"+url.PathEscape(sid), nil, out)
}
