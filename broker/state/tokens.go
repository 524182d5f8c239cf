package state

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate-db/tollgate/events"
)

// NewToken is what CreateToken needs. ID is TokenID of the secret value,
// which the caller generates (256 random bits) and shows once.
type NewToken struct {
	ID        string
	Type      string
	Expires   time.Time
	SingleUse bool
}

// CreateToken stores a join token.
func (s *Store) CreateToken(ctx context.Context, by Actor, nt NewToken) (Token, error) {
	if !tokenIDRE.MatchString(nt.ID) {
		return Token{}, invalid("token id %q: want the 64 hex digits of TokenID(secret)", nt.ID)
	}
	if nt.Type != TokenDB && nt.Type != TokenProxy {
		return Token{}, invalid("token type %q: want %q or %q", nt.Type, TokenDB, TokenProxy)
	}
	if !nt.Expires.After(time.Now()) {
		return Token{}, invalid("token expiry %s is not in the future", nt.Expires.UTC().Format(time.RFC3339))
	}
	_, err := s.change(ctx, by, subject(AggToken, nt.ID), func() (events.Event, error) {
		if _, ok := s.tokens[nt.ID]; ok {
			return nil, fmt.Errorf("token %.12s…: %w", nt.ID, ErrExists)
		}
		return &events.TokenCreate{TokenID: nt.ID, TokenType: nt.Type, Expires: nt.Expires.UTC(), SingleUse: nt.SingleUse}, nil
	})
	if err != nil {
		return Token{}, err
	}
	t, _ := s.Token(nt.ID)
	return t, nil
}

// TokenRefusal is the error UseToken returns for a token that cannot be
// used. Event is the refusal, ready to publish to AUDIT: refusals change
// no state, so they are not stored in STATE.
type TokenRefusal struct {
	Reason string
	Event  *events.TokenUse
}

func (e *TokenRefusal) Error() string { return "join token refused: " + e.Reason }

// UseToken records a host (hostID) joining with the token whose TokenID is
// id, which must be of type typ (TokenDB for an agent, TokenProxy for a
// proxy). A token that is unknown, expired, (single-use) already used or
// of another type is refused with a *TokenRefusal, and a refusal leaves
// it usable; two agents racing for one single-use token cannot both win,
// as the use is appended against the token's last sequence.
func (s *Store) UseToken(ctx context.Context, by Actor, id, hostID, typ string) (Token, error) {
	if hostID == "" {
		return Token{}, invalid("host id is empty")
	}
	if !tokenIDRE.MatchString(id) {
		ev := &events.TokenUse{Status: events.Status{Error: "malformed token id"}, HostID: hostID}
		ev.User, ev.Roles = by.User, by.Roles
		_ = events.Stamp(ev, s.cluster)
		return Token{}, &TokenRefusal{Reason: "malformed token id (want TokenID of the token)", Event: ev}
	}
	_, err := s.change(ctx, by, subject(AggToken, id), func() (events.Event, error) {
		t, ok := s.tokens[id]
		reason := ""
		if !ok {
			reason = "unknown token"
		} else if reason = t.Usable(time.Now()); reason == "" && t.Type != typ {
			reason = fmt.Sprintf("a token of type %s cannot join a host of type %s (tollgate tokens add --type=%s)", t.Type, typ, typ)
		}
		if reason != "" {
			ev := &events.TokenUse{Status: events.Status{Success: false, Error: reason},
				TokenID: id, TokenType: t.Type, HostID: hostID}
			ev.User, ev.Roles = by.User, by.Roles
			_ = events.Stamp(ev, s.cluster)
			return nil, &TokenRefusal{Reason: reason, Event: ev}
		}
		return &events.TokenUse{Status: events.Status{Success: true}, TokenID: id, TokenType: t.Type, HostID: hostID}, nil
	})
	if err != nil {
		return Token{}, err
	}
	t, _ := s.Token(id)
	return t, nil
}
