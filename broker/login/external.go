package login

import (
	"context"
	"crypto"
	"fmt"
	"net/http"
	"time"

	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// External is a login vouched for by an identity provider (single
// sign-on): the identity comes from the provider's claims, not from a
// stored user.
type External struct {
	Method    string // events.LoginOIDC
	Connector string
	// MFA is events.MFAProvider when the provider says it checked a
	// second factor.
	MFA       string
	Identity  identity.Identity
	PublicKey crypto.PublicKey
	TTL       time.Duration
	Meta
}

// LoginExternal issues a user certificate for an identity a provider
// vouched for. A lock on the user or one of the roles refuses it, as it
// refuses a password login; the user.login event names the connector.
func (s *Service) LoginExternal(ctx context.Context, x External) (*Issued, error) {
	ev := x.event()
	ev.User = clip(x.Identity.User, 256)
	if err := CheckPublicKey(x.PublicKey); err != nil {
		r := &Refusal{Status: http.StatusBadRequest, Message: "login: " + err.Error(), Reason: events.LoginBadRequest, Detail: err.Error()}
		s.RefuseExternal(ctx, x, r)
		return nil, r
	}
	if l, locked := s.store.LockedOut(s.now(), x.Identity.User, x.Identity.Roles, ""); locked {
		msg := "locked"
		if l.Message != "" {
			msg += ": " + l.Message
		}
		r := &Refusal{Status: http.StatusForbidden, Message: fmt.Sprintf("user %s is %s", x.Identity.User, msg), Reason: events.LoginLocked, Detail: "lock " + l.ID}
		s.RefuseExternal(ctx, x, r)
		return nil, r
	}
	id := x.Identity
	if x.MFA == "" {
		id.Roles, ev.WithheldRoles = s.withholdMFA(id.Roles, nil)
	}
	ev.Success, ev.Roles = true, id.Roles
	return s.issueUser(ctx, state.Actor{User: id.User, Roles: id.Roles}, id, x.PublicKey, x.TTL, events.IssueLogin, x.Source, ev)
}

// RefuseExternal records a refused single sign-on: the user.login event
// with the connector, the reason and what failed.
func (s *Service) RefuseExternal(ctx context.Context, x External, r *Refusal) {
	ev := x.event()
	ev.User = clip(x.Identity.User, 256)
	ev.Success, ev.Error, ev.Reason = false, r.Detail, r.Reason
	if err := s.audit.Publish(ctx, ev); err != nil {
		s.log.Error("login refusal not audited", "connector", x.Connector, "reason", r.Reason, "err", err)
	}
}

func (x External) event() *events.UserLogin {
	return &events.UserLogin{Method: x.Method, Connector: x.Connector, MFA: x.MFA, SourceAddr: x.Source,
		UserAgent: clip(x.UserAgent, 200), Path: x.Path}
}
