// Package admin holds the broker's admin operations (users, roles, join
// tokens, databases, certificate signing) over its state and CAs. The HTTPS
// API serves them to remote admins holding the editor role; the admin
// commands call them directly on a local data dir. Either way every change
// is an event: STATE events for state changes, cert.issue in AUDIT for
// certificates.
package admin

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/ca"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/presence"
	"github.com/tollgate-db/tollgate/broker/sso"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

// Defaults of the admin operations.
const (
	// DefaultInviteTTL leaves a day to pass the invite on and use it.
	DefaultInviteTTL = 24 * time.Hour
	// MaxInviteTTL bounds it: an invite is a credential.
	MaxInviteTTL = 7 * 24 * time.Hour
	// DefaultTokenTTL is how long a join token works when no TTL is given.
	DefaultTokenTTL = 30 * time.Minute
	// MaxTokenTTL bounds join tokens.
	MaxTokenTTL = 30 * 24 * time.Hour
)

// Service runs the admin operations.
type Service struct {
	store *state.Store
	cas   *ca.Authorities
	login *login.Service
	// proxy is the public address users log in to, for the invite command.
	proxy string
	now   func() time.Time
	// presence says which databases some proxy routes; nil before
	// SetPresence.
	presence *presence.View
}

// SetPresence lets the database lists say online or offline from the
// proxies' routes (broker/presence).
func (s *Service) SetPresence(v *presence.View) { s.presence = v }

// New returns the admin operations of a broker whose proxy is reached at
// proxyAddr (HOST:PORT).
func New(store *state.Store, cas *ca.Authorities, ls *login.Service, proxyAddr string) *Service {
	return &Service{store: store, cas: cas, login: ls, proxy: proxyAddr, now: time.Now}
}

// As binds the operations to who performs them: the result is what the
// admin commands and the API call.
func (s *Service) As(by state.Actor, source string) api.Admin {
	return &bound{s: s, by: by, source: source}
}

type bound struct {
	s      *Service
	by     state.Actor
	source string
}

// HostCAPin is the fingerprint of the host CA that `tg login --ca-pin`
// checks.
func (s *Service) HostCAPin() (string, error) {
	c, err := s.cas.Cert(ca.Host)
	if err != nil {
		return "", err
	}
	return api.Fingerprint(c), nil
}

func (b *bound) AddUser(ctx context.Context, req api.AddUserRequest) (*api.AddUserResponse, error) {
	s := b.s
	if len(req.Roles) == 0 {
		return nil, fmt.Errorf("%w: user %s: --roles is required (e.g. --roles=access)", state.ErrInvalid, req.Name)
	}
	ttl := req.InviteTTL.Std()
	switch {
	case ttl == 0:
		ttl = DefaultInviteTTL
	case ttl < time.Minute || ttl > MaxInviteTTL:
		return nil, fmt.Errorf("%w: invite ttl %s: want 1m to %s", state.ErrInvalid, ttl, MaxInviteTTL)
	}
	traits := map[string][]string{}
	if len(req.DBUsers) > 0 {
		traits[identity.TraitDBUsers] = clean(req.DBUsers)
	}
	if len(req.DBNames) > 0 {
		traits[identity.TraitDBNames] = clean(req.DBNames)
	}
	if len(traits) == 0 {
		traits = nil
	}
	invite, hash, err := login.NewInvite()
	if err != nil {
		return nil, err
	}
	expires := s.now().Add(ttl).UTC().Truncate(time.Second)
	u, err := s.store.CreateUser(ctx, b.by, state.NewUser{Name: req.Name, Roles: clean(req.Roles), Traits: traits,
		InviteHash: hash, InviteExpires: expires})
	if err != nil {
		return nil, err
	}
	pin, err := s.HostCAPin()
	if err != nil {
		return nil, err
	}
	return &api.AddUserResponse{
		User: apiUser(u), Invite: invite, InviteExpires: expires, Proxy: s.proxy, HostCAPin: pin,
		LoginCommand: LoginCommand(s.proxy, u.Name, invite, pin),
	}, nil
}

// LoginCommand is the command a new user runs to set a password and log
// in. The pin lets tg check the proxy on the very first connection.
func LoginCommand(proxy, user, invite, pin string) string {
	return fmt.Sprintf("tg login --proxy=%s --user=%s --invite=%s --ca-pin=%s", proxy, shellQuote(user), invite, pin)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./-_", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func clean(vs []string) []string {
	var out []string
	for _, v := range vs {
		if v = strings.TrimSpace(v); v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func apiUser(u state.User) api.User {
	au := api.User{Name: u.Name, Roles: u.Roles, Traits: u.Traits, Created: u.Created, CreatedBy: u.CreatedBy,
		PasswordSet: u.PasswordSet, LockedUntil: u.LockedUntil}
	if u.InvitePending(time.Now()) {
		au.InviteExpires = u.InviteExpires
	}
	if au.Roles == nil {
		au.Roles = []string{}
	}
	return au
}

func (b *bound) Users(context.Context) ([]api.User, error) {
	us := b.s.store.Users()
	out := make([]api.User, 0, len(us))
	for _, u := range us {
		out = append(out, apiUser(u))
	}
	return out, nil
}

func (b *bound) RemoveUser(ctx context.Context, name string) error {
	return b.s.store.DeleteUser(ctx, b.by, name)
}

// ResetMFA removes every second factor of a user who lost theirs; the
// user.mfa_remove event names the administrator.
func (b *bound) ResetMFA(ctx context.Context, name string) error {
	return b.s.store.RemoveMFA(ctx, b.by, name, "", nil)
}

func (b *bound) UpsertRoles(ctx context.Context, yaml string) ([]api.RoleResult, error) {
	roles, err := access.Parse([]byte(yaml))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", state.ErrInvalid, err)
	}
	if len(roles) == 0 {
		return nil, fmt.Errorf("%w: no role in the YAML", state.ErrInvalid)
	}
	var out []api.RoleResult
	for _, r := range roles {
		cur, existed := b.s.store.Role(r.Name())
		created, err := b.s.store.UpsertRole(ctx, b.by, r)
		if err != nil {
			return out, fmt.Errorf("role %s: %w", r.Name(), err)
		}
		res := "updated"
		switch {
		case created:
			res = "created"
		case existed && reflect.DeepEqual(cur, r):
			res = "unchanged"
		}
		out = append(out, api.RoleResult{Name: r.Name(), Result: res})
	}
	return out, nil
}

func (b *bound) Roles(context.Context) ([]api.Role, error) {
	var out []api.Role
	for _, r := range b.s.store.Roles() {
		out = append(out, api.Role{Role: r, Builtin: access.IsBuiltin(r.Name())})
	}
	return out, nil
}

func (b *bound) AddToken(ctx context.Context, req api.AddTokenRequest) (*api.AddTokenResponse, error) {
	if req.Type == "" {
		return nil, fmt.Errorf("%w: token type is required (--type=db for an agent, --type=proxy for a proxy)", state.ErrInvalid)
	}
	ttl := req.TTL.Std()
	switch {
	case ttl == 0:
		ttl = DefaultTokenTTL
	case ttl < time.Minute || ttl > MaxTokenTTL:
		return nil, fmt.Errorf("%w: token ttl %s: want 1m to %s", state.ErrInvalid, ttl, MaxTokenTTL)
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return nil, err
	}
	value := base64.RawURLEncoding.EncodeToString(buf)
	t, err := b.s.store.CreateToken(ctx, b.by, state.NewToken{ID: state.TokenID(value), Type: req.Type,
		Expires: b.s.now().Add(ttl).UTC().Truncate(time.Second), SingleUse: !req.Reusable})
	if err != nil {
		return nil, err
	}
	hostCA, err := b.s.cas.Cert(ca.Host)
	if err != nil {
		return nil, err
	}
	return &api.AddTokenResponse{Token: apiToken(t), Value: value, HostCAPin: api.Fingerprint(hostCA)}, nil
}

func apiToken(t state.Token) api.Token {
	return api.Token{ID: t.ID, Type: t.Type, Expires: t.Expires, SingleUse: t.SingleUse, Uses: t.Uses,
		LastUsedBy: t.LastUsedBy, Created: t.Created, CreatedBy: t.CreatedBy}
}

func (b *bound) Tokens(context.Context) ([]api.Token, error) {
	var out []api.Token
	for _, t := range b.s.store.Tokens() {
		out = append(out, apiToken(t))
	}
	return out, nil
}

// APIDatabase is a database as the API lists it, without presence: online
// while its agent's heartbeats come.
func APIDatabase(d state.Database, now time.Time) api.Database {
	live := !d.Expired(now)
	return api.Database{Name: d.Name, Protocol: d.Protocol, URI: d.URI, Labels: d.Labels, HostID: d.HostID,
		AgentAddr: d.AgentAddr, Live: live, Online: live, LastHeartbeat: d.LastHeartbeat}
}

// Database is d as the API lists it. A database whose agent is reached
// through a proxy (its address is a proxy's) is online while some proxy
// holds a tunnel of that agent: a heartbeat through NATS says nothing of
// whether a client can reach it. One reached directly is online while
// its heartbeats come.
func (s *Service) Database(d state.Database, now time.Time) api.Database {
	out := APIDatabase(d, now)
	if s == nil || s.presence == nil {
		return out
	}
	for _, r := range s.presence.Routes(d.Name) {
		if r.HostID == d.HostID && !slices.Contains(out.Proxies, r.Proxy) {
			out.Proxies = append(out.Proxies, r.Proxy)
		}
	}
	slices.Sort(out.Proxies)
	tunneled := len(out.Proxies) > 0 || d.AgentAddr == s.proxy
	for _, p := range s.presence.Proxies() {
		tunneled = tunneled || p.Addr == d.AgentAddr
	}
	if tunneled {
		out.Online = len(out.Proxies) > 0
	}
	return out
}

func (b *bound) Databases(context.Context) ([]api.Database, error) {
	now := b.s.now()
	var out []api.Database
	for _, d := range b.s.store.Databases() {
		out = append(out, b.s.Database(d, now))
	}
	return out, nil
}

func (b *bound) SignIdentity(ctx context.Context, req api.SignIdentityRequest) (*api.Certificate, error) {
	if req.User == "" {
		return nil, fmt.Errorf("%w: --user is required", state.ErrInvalid)
	}
	pub, err := api.DecodePublicKey(req.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", state.ErrInvalid, err)
	}
	id, err := b.s.IdentityFor(req.User, req.Roles, req.DBUsers, req.DBNames)
	if err != nil {
		return nil, err
	}
	is, err := b.s.login.SignUser(ctx, b.by, id, pub, req.TTL.Std(), b.source)
	if err != nil {
		return nil, err
	}
	return b.s.Certificate(is)
}

// IdentityFor is the identity of an identity file for user: the roles and
// traits given, or, when roles is empty, those of the user in the state.
func (s *Service) IdentityFor(user string, roles, dbUsers, dbNames []string) (identity.Identity, error) {
	if len(roles) == 0 {
		u, ok := s.store.User(user)
		if !ok {
			return identity.Identity{}, fmt.Errorf("%w: %q is not a Tollgate user (tollgate users ls); --roles is required for an identity of anyone else", state.ErrNotFound, user)
		}
		return identity.Identity{User: u.Name, Roles: u.Roles, Traits: u.Traits}, nil
	}
	id := identity.Identity{User: user, Roles: clean(roles)}
	if len(dbUsers) > 0 || len(dbNames) > 0 {
		id.Traits = map[string][]string{}
		if len(dbUsers) > 0 {
			id.Traits[identity.TraitDBUsers] = clean(dbUsers)
		}
		if len(dbNames) > 0 {
			id.Traits[identity.TraitDBNames] = clean(dbNames)
		}
	}
	return id, nil
}

// Certificate is the API form of an issued user or host certificate.
func (s *Service) Certificate(is *login.Issued) (*api.Certificate, error) {
	userCA, err := s.cas.CertPEM(ca.User)
	if err != nil {
		return nil, err
	}
	hostCA, err := s.cas.CertPEM(ca.Host)
	if err != nil {
		return nil, err
	}
	dbCA, err := s.cas.CertPEM(ca.DB)
	if err != nil {
		return nil, err
	}
	return &api.Certificate{CertPEM: string(is.CertPEM), UserCAPEM: string(userCA), HostCAPEM: string(hostCA), DBCAPEM: string(dbCA),
		Identity: is.Identity, WithheldRoles: is.Withheld}, nil
}

func (b *bound) SignDB(ctx context.Context, req api.SignDBRequest) (*api.SignDBResponse, error) {
	if len(req.Hosts) == 0 {
		return nil, fmt.Errorf("%w: hosts are required: the names and addresses clients use to reach the database", state.ErrInvalid)
	}
	certPEM, keyPEM, casPEM, err := b.s.cas.IssueDBServer(req.Hosts, req.TTL.Std())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", state.ErrInvalid, err)
	}
	if err := AuditIssued(ctx, b.s.auditor(), b.by, ca.DB, certPEM, events.IssueSign, b.source); err != nil {
		return nil, err
	}
	return &api.SignDBResponse{CertPEM: string(certPEM), KeyPEM: string(keyPEM), CAsPEM: string(casPEM)}, nil
}

func (s *Service) auditor() login.Auditor { return s.login.Auditor() }

// AuditIssued publishes the cert.issue event of a certificate (PEM) that
// caType signed on by's behalf, for purpose (events.Issue*).
func AuditIssued(ctx context.Context, a login.Auditor, by state.Actor, caType ca.Type, certPEM []byte, purpose, source string) error {
	c, err := api.ParseCertificatePEM(certPEM)
	if err != nil {
		return err
	}
	hosts := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	ev := &events.CertIssue{CAType: string(caType), Purpose: purpose, Subject: c.Subject.CommonName,
		Serial: c.SerialNumber.Text(16), NotAfter: c.NotAfter.UTC(), Hosts: hosts, SourceAddr: source}
	if caType == ca.User {
		if id, err := identity.FromCertificate(c); err == nil {
			ev.CertRoles, ev.CertTraits = id.Roles, id.Traits
		}
	}
	ev.User, ev.Roles = by.User, by.Roles
	if err := a.Publish(ctx, ev); err != nil {
		return fmt.Errorf("%w: %v", login.ErrAudit, err)
	}
	return nil
}

// IsClientError reports whether err is the caller's mistake (bad input,
// missing or duplicate names) rather than the broker's.
func IsClientError(err error) bool {
	return errors.Is(err, state.ErrInvalid) || errors.Is(err, state.ErrExists) ||
		errors.Is(err, state.ErrNotFound) || errors.Is(err, state.ErrInUse)
}

func (b *bound) UpsertConnectors(ctx context.Context, yaml string) ([]api.ConnectorResult, error) {
	cs, err := sso.Parse([]byte(yaml))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", state.ErrInvalid, err)
	}
	// Every mapped role must exist: a misspelt role would make the
	// mapping grant nothing, and logins fail later with a puzzling refusal.
	for _, p := range cs {
		for i, m := range p.Connector.ClaimsToRoles {
			if _, missing := b.s.store.ResolveRoles(m.Roles); len(missing) > 0 {
				return nil, fmt.Errorf("%w: connector %s: claims_to_roles[%d]: unknown role %s (tollgate roles ls)",
					state.ErrInvalid, p.Connector.Name, i, strings.Join(missing, ", "))
			}
		}
	}
	var out []api.ConnectorResult
	for _, p := range cs {
		cur, existed := b.s.store.Connector(p.Connector.Name)
		created, err := b.s.store.UpsertConnector(ctx, b.by, p.Connector, p.Secret)
		if err != nil {
			return out, fmt.Errorf("connector %s: %w", p.Connector.Name, err)
		}
		res := "updated"
		now, _ := b.s.store.Connector(p.Connector.Name)
		switch {
		case created:
			res = "created"
		case existed && reflect.DeepEqual(cur, now):
			res = "unchanged"
		}
		out = append(out, api.ConnectorResult{Name: p.Connector.Name, Result: res})
	}
	return out, nil
}

func (b *bound) Connectors(context.Context) ([]api.Connector, error) {
	return b.s.store.Connectors(), nil
}

func (b *bound) RemoveConnector(ctx context.Context, name string) error {
	return b.s.store.DeleteConnector(ctx, b.by, name)
}
