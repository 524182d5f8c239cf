// Package apiserver serves the broker's public HTTPS API (broker/api
// describes it) on the proxy address, with the broker's host certificate.
//
// Client certificates are requested but not checked by the TLS layer:
// the handlers verify them with the user CA (ca.VerifyUser), so that a
// refused certificate gets an answer that says why (expired, another CA,
// altered) and an audit event, instead of a bare handshake failure.
package apiserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/broker/access"
	"github.com/tollgate-db/tollgate/broker/admin"
	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/identity"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/state"
)

// Server is the API.
type Server struct {
	store *state.Store
	login *login.Service
	admin *admin.Service
	log   *slog.Logger
	mux   *http.ServeMux
}

// New returns the API over the broker's services.
func New(store *state.Store, ls *login.Service, as *admin.Service, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{store: store, login: ls, admin: as, log: log, mux: http.NewServeMux()}
	s.mux.HandleFunc("POST "+api.PathLogin, s.handleLogin)
	s.mux.HandleFunc("POST "+api.PathJoin, s.handleJoin)
	s.mux.HandleFunc("POST "+api.PathLoginPasskey, func(w http.ResponseWriter, r *http.Request) {
		var req api.PasskeyLoginRequest
		if !decode(w, r, &req) {
			return
		}
		pub, err := api.DecodePublicKey(req.PublicKey)
		if err != nil {
			writeError(w, http.StatusBadRequest, "passkey login: "+err.Error(), 0)
			return
		}
		b, err := decodeBrowser(req.RedirectURL, req.Secret)
		if err != nil {
			writeError(w, http.StatusBadRequest, "passkey login: "+err.Error(), 0)
			return
		}
		u, err := s.login.BeginPasskeyLogin(pub, req.TTL.Std(), *b)
		respond(&api.BrowserResponse{URL: u}, err)(w)
	})
	s.mux.HandleFunc("POST "+api.PathAgentDBClient, s.handleAgentDBClient)
	s.mux.HandleFunc("POST "+api.PathAgentRenew, s.handleAgentRenew)
	s.mux.HandleFunc("POST "+api.PathAgentRegister, s.handleAgentRegister)
	s.mux.HandleFunc("POST "+api.PathReissue, s.user(s.handleReissue))
	s.mux.HandleFunc("GET "+api.PathWhoami, s.user(s.handleWhoami))
	s.mux.HandleFunc("GET "+api.PathDatabases, s.user(s.handleDatabases))
	s.mux.HandleFunc("GET "+api.PathAdminUsers, s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		respond(a.Users(r.Context()))(w)
	}))
	s.mux.HandleFunc("POST "+api.PathAdminUsers, s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		var req api.AddUserRequest
		if decode(w, r, &req) {
			respond(a.AddUser(r.Context(), req))(w)
		}
	}))
	s.mux.HandleFunc("DELETE "+api.PathAdminUsers+"/{name}", s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		if err := a.RemoveUser(r.Context(), r.PathValue("name")); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	s.mux.HandleFunc("POST "+api.PathAdminUsers+"/{name}/reset-mfa", s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		if err := a.ResetMFA(r.Context(), r.PathValue("name")); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	s.mux.HandleFunc("GET "+api.PathAdminRoles, s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		respond(a.Roles(r.Context()))(w)
	}))
	s.mux.HandleFunc("POST "+api.PathAdminRoles, s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		var req api.RolesRequest
		if decode(w, r, &req) {
			respond(a.UpsertRoles(r.Context(), req.YAML))(w)
		}
	}))
	s.mux.HandleFunc("GET "+api.PathAdminTokens, s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		respond(a.Tokens(r.Context()))(w)
	}))
	s.mux.HandleFunc("POST "+api.PathAdminTokens, s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		var req api.AddTokenRequest
		if decode(w, r, &req) {
			respond(a.AddToken(r.Context(), req))(w)
		}
	}))
	s.mux.HandleFunc("GET "+api.PathAdminDatabases, s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		respond(a.Databases(r.Context()))(w)
	}))
	s.mux.HandleFunc("POST "+api.PathAdminSignID, s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		var req api.SignIdentityRequest
		if decode(w, r, &req) {
			respond(a.SignIdentity(r.Context(), req))(w)
		}
	}))
	s.mux.HandleFunc("POST "+api.PathAdminSignDB, s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		var req api.SignDBRequest
		if decode(w, r, &req) {
			respond(a.SignDB(r.Context(), req))(w)
		}
	}))
	s.mux.HandleFunc("POST "+api.PathMFATOTP, s.user(func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		secret, url, err := s.login.BeginTOTP(id)
		respond(&api.TOTPEnrollment{Secret: secret, URL: url}, err)(w)
	}))
	s.mux.HandleFunc("POST "+api.PathMFATOTPConfirm, s.user(func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		var req api.TOTPConfirmRequest
		if !decode(w, r, &req) {
			return
		}
		if err := s.login.ConfirmTOTP(r.Context(), id, req.Code); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	s.mux.HandleFunc("GET "+api.PathMFA, s.user(func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		fs, err := s.login.Factors(r.Context(), id)
		out := make([]api.Factor, 0, len(fs))
		for _, f := range fs {
			out = append(out, api.Factor{Name: f.Name, Method: f.Method})
		}
		respond(out, err)(w)
	}))
	s.mux.HandleFunc("POST "+api.PathMFASession, s.user(func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		var req api.SessionCertRequest
		if !decode(w, r, &req) {
			return
		}
		pub, err := api.DecodePublicKey(req.PublicKey)
		if err != nil {
			writeError(w, http.StatusBadRequest, "session mfa: "+err.Error(), 0)
			return
		}
		sr := login.SessionRequest{Database: req.Database, DBUser: req.DBUser, PublicKey: pub, OTP: req.OTP, Meta: meta(r)}
		if req.RedirectURL != "" || req.Secret != "" {
			if sr.Browser, err = decodeBrowser(req.RedirectURL, req.Secret); err != nil {
				writeError(w, http.StatusBadRequest, "session mfa: "+err.Error(), 0)
				return
			}
		}
		is, err := s.login.IssueSession(r.Context(), id, sr)
		if err != nil {
			fail(w, err)
			return
		}
		respond(s.admin.Certificate(is))(w)
	}))
	s.mux.HandleFunc("POST "+api.PathMFARemove, s.user(func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		var req api.RemoveFactorRequest
		if !decode(w, r, &req) {
			return
		}
		rr := login.RemoveRequest{Factor: req.Factor, OTP: req.OTP, Meta: meta(r)}
		if req.RedirectURL != "" || req.Secret != "" {
			var err error
			if rr.Browser, err = decodeBrowser(req.RedirectURL, req.Secret); err != nil {
				writeError(w, http.StatusBadRequest, "mfa rm: "+err.Error(), 0)
				return
			}
		}
		if err := s.login.RemoveFactor(r.Context(), id, rr); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	s.mux.HandleFunc("POST "+api.PathMFAWebAuthn, s.user(func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		var req api.BrowserRequest
		if !decode(w, r, &req) {
			return
		}
		b, err := decodeBrowser(req.RedirectURL, req.Secret)
		if err != nil {
			writeError(w, http.StatusBadRequest, "security keys: "+err.Error(), 0)
			return
		}
		u, err := s.login.BeginWebAuthnRegistrationBrowser(r.Context(), id, *b)
		respond(&api.BrowserResponse{URL: u}, err)(w)
	}))
	s.mux.HandleFunc("GET "+api.PathAdminSSO, s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		respond(a.Connectors(r.Context()))(w)
	}))
	s.mux.HandleFunc("POST "+api.PathAdminSSO, s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		var req api.ConnectorsRequest
		if decode(w, r, &req) {
			respond(a.UpsertConnectors(r.Context(), req.YAML))(w)
		}
	}))
	s.mux.HandleFunc("DELETE "+api.PathAdminSSO+"/{name}", s.editor(func(w http.ResponseWriter, r *http.Request, a api.Admin) {
		if err := a.RemoveConnector(r.Context(), r.PathValue("name")); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API operation %s %s", r.Method, r.URL.Path), 0)
	})
	return s
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, api.MaxBody)
	w.Header().Set("Cache-Control", "no-store")
	s.mux.ServeHTTP(w, r)
}

// TLSConfig is the server side of the API's TLS: cert is the proxy's host
// certificate, whose chain (Certificate[1]) should hold the host CA so
// that a first-time client can pin it.
func TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// Serve serves the API on ln with TLS until ctx ends, then shuts down
// gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tc *tls.Config) error {
	hs := &http.Server{
		Handler:           s,
		TLSConfig:         tc,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	err := hs.Serve(tls.NewListener(ln, tc))
	// The proxy closes its handoff listener when ctx ends, which may come
	// before Shutdown: that is a shutdown too, not a failure.
	if errors.Is(err, http.ErrServerClosed) || (ctx.Err() != nil && errors.Is(err, net.ErrClosed)) {
		<-done
		return nil
	}
	return err
}

func meta(r *http.Request) login.Meta {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return login.Meta{Source: host, UserAgent: r.UserAgent(), Path: r.Method + " " + r.URL.Path}
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req api.LoginRequest
	if !decode(w, r, &req) {
		return
	}
	pub, err := api.DecodePublicKey(req.PublicKey)
	if err != nil {
		writeError(w, http.StatusBadRequest, "login: "+err.Error(), 0)
		return
	}
	var browser *login.Browser
	if req.RedirectURL != "" || req.Secret != "" {
		if browser, err = decodeBrowser(req.RedirectURL, req.Secret); err != nil {
			writeError(w, http.StatusBadRequest, "login: "+err.Error(), 0)
			return
		}
	}
	is, err := s.login.Login(r.Context(), login.Request{User: req.User, Password: req.Password, Invite: req.Invite, OTP: req.OTP,
		PublicKey: pub, TTL: req.TTL.Std(), Browser: browser, Meta: meta(r)})
	if err != nil {
		fail(w, err)
		return
	}
	respond(s.admin.Certificate(is))(w)
}

// decodeBrowser reads tg's loopback return: its listener's URL and the
// secret that seals what goes there.
func decodeBrowser(redirect, secret string) (*login.Browser, error) {
	if err := api.CheckLoopback(redirect); err != nil {
		return nil, err
	}
	b, err := api.DecodeSecret(secret)
	if err != nil {
		return nil, err
	}
	return &login.Browser{RedirectURL: redirect, Secret: b}, nil
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req api.JoinRequest
	if !decode(w, r, &req) {
		return
	}
	pub, err := api.DecodePublicKey(req.PublicKey)
	if err != nil {
		writeError(w, http.StatusBadRequest, "join: "+err.Error(), 0)
		return
	}
	is, err := s.login.Join(r.Context(), req.Token, req.HostID, req.Hosts, pub, meta(r))
	if err != nil {
		fail(w, err)
		return
	}
	respond(s.admin.Certificate(is))(w)
}

// handleAgentDBClient signs a db-client certificate for an agent that
// presents its host certificate.
func (s *Server) handleAgentDBClient(w http.ResponseWriter, r *http.Request) {
	var req api.DBClientRequest
	if !decode(w, r, &req) {
		return
	}
	pub, err := api.DecodePublicKey(req.PublicKey)
	if err != nil {
		writeError(w, http.StatusBadRequest, "db-client certificate: "+err.Error(), 0)
		return
	}
	is, err := s.login.IssueDBClient(r.Context(), r.TLS.PeerCertificates, req.Database, req.DBUser, pub, req.TTL.Std(), meta(r))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.DBClientCertificate{CertPEM: string(is.CertPEM)})
}

// handleAgentRegister registers the databases of an agent that presents
// its host certificate.
func (s *Server) handleAgentRegister(w http.ResponseWriter, r *http.Request) {
	var req api.RegisterRequest
	if !decode(w, r, &req) {
		return
	}
	nds := make([]state.NewDatabase, 0, len(req.Databases))
	for _, d := range req.Databases {
		nds = append(nds, state.NewDatabase{Name: d.Name, Protocol: d.Protocol, URI: d.URI, Labels: d.Labels,
			AgentAddr: d.AgentAddr, HeartbeatTTL: d.HeartbeatTTL.Std()})
	}
	dbs, err := s.login.RegisterDatabases(r.Context(), r.TLS.PeerCertificates, nds, meta(r))
	if err != nil {
		fail(w, err)
		return
	}
	now := time.Now()
	out := make([]api.Database, 0, len(dbs))
	for _, d := range dbs {
		out = append(out, s.admin.Database(d, now))
	}
	writeJSON(w, http.StatusOK, out)
}

// handleAgentRenew signs a fresh host certificate for an agent that
// presents its current one.
func (s *Server) handleAgentRenew(w http.ResponseWriter, r *http.Request) {
	var req api.RenewHostRequest
	if !decode(w, r, &req) {
		return
	}
	pub, err := api.DecodePublicKey(req.PublicKey)
	if err != nil {
		writeError(w, http.StatusBadRequest, "renewal: "+err.Error(), 0)
		return
	}
	is, err := s.login.RenewHost(r.Context(), r.TLS.PeerCertificates, req.Hosts, pub, meta(r))
	if err != nil {
		fail(w, err)
		return
	}
	respond(s.admin.Certificate(is))(w)
}

type userHandler func(w http.ResponseWriter, r *http.Request, id identity.Identity)

// user wraps a handler that needs a verified user certificate.
func (s *Server) user(h userHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var certs = r.TLS.PeerCertificates
		id, err := s.login.Authenticate(r.Context(), certs, meta(r))
		if err != nil {
			fail(w, err)
			return
		}
		h(w, r, id)
	}
}

// editor wraps an admin handler: the caller's certificate must carry the
// editor role. Admin operations have no finer rules.
func (s *Server) editor(h func(w http.ResponseWriter, r *http.Request, a api.Admin)) http.HandlerFunc {
	return s.user(func(w http.ResponseWriter, r *http.Request, id identity.Identity) {
		if !slices.Contains(id.Roles, access.RoleEditor) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("%s %s needs the %s role; user %s holds [%s]",
				r.Method, r.URL.Path, access.RoleEditor, id.User, strings.Join(id.Roles, ", ")), 0)
			return
		}
		h(w, r, s.admin.As(state.Actor{User: id.User, Roles: id.Roles}, meta(r).Source))
	})
}

func (s *Server) handleReissue(w http.ResponseWriter, r *http.Request, id identity.Identity) {
	var req api.ReissueRequest
	if !decode(w, r, &req) {
		return
	}
	pub, err := api.DecodePublicKey(req.PublicKey)
	if err != nil {
		writeError(w, http.StatusBadRequest, "reissue: "+err.Error(), 0)
		return
	}
	is, err := s.login.Reissue(r.Context(), id, pub, req.TTL.Std(), meta(r))
	if err != nil {
		fail(w, err)
		return
	}
	respond(s.admin.Certificate(is))(w)
}

func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request, id identity.Identity) {
	writeJSON(w, http.StatusOK, api.Certificate{Identity: id})
}

// handleDatabases lists the live databases the caller could open a session
// to at all: some role's allow labels select it and no deny rule refuses
// it by labels alone (access.CanSee). Which db_user and db_name work is
// decided when a session opens, by access.Decide on the agent.
func (s *Server) handleDatabases(w http.ResponseWriter, r *http.Request, id identity.Identity) {
	out, reason := visibleDatabases(s.store, s.admin, id)
	// An empty list says why, so the client need not leave the user guessing.
	if reason != "" {
		w.Header().Set(api.HeaderEmptyReason, reason)
	}
	writeJSON(w, http.StatusOK, out)
}

// visibleDatabases lists the live databases id may see (access.CanSee);
// for an empty list it says why.
func visibleDatabases(store *state.Store, as *admin.Service, id identity.Identity) ([]api.Database, string) {
	roles, _ := store.ResolveRoles(id.Roles)
	sessionMFA := access.Options(roles).RequireSessionMFA
	now := time.Now()
	out := []api.Database{}
	all := store.Databases()
	seen := false
	for _, d := range all {
		if !access.CanSee(id, roles, d.AccessDatabase()) {
			continue
		}
		seen = true
		// Listed while live or online, with its status: a tunneled
		// database whose agent still beats but has no tunnel shows as
		// offline rather than vanishing.
		if ad := as.Database(d, now); ad.Live || ad.Online {
			ad.SessionMFA = sessionMFA
			out = append(out, ad)
		}
	}
	if len(out) > 0 {
		return out, ""
	}
	switch {
	case len(all) == 0:
		return out, api.EmptyNoneRegistered
	case !seen:
		return out, api.EmptyNoneAllowed
	}
	return out, api.EmptyNoneLive
}

// decode reads a JSON body strictly; it answers the error itself.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit), 0)
		case errors.Is(err, io.EOF):
			writeError(w, http.StatusBadRequest, "request body is empty; want JSON", 0)
		default:
			writeError(w, http.StatusBadRequest, "request body: "+err.Error(), 0)
		}
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "request body: data after the JSON object", 0)
		return false
	}
	return true
}

// respond turns a (value, error) result into the answer that writes it.
func respond[T any](v T, err error) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

// fail answers an error with the status it calls for.
func fail(w http.ResponseWriter, err error) {
	var ref *login.Refusal
	switch {
	case errors.As(err, &ref) && ref.BrowserURL != "":
		writeJSON(w, ref.Status, api.Error{Error: ref.Message, BrowserURL: ref.BrowserURL})
	case errors.As(err, &ref):
		writeError(w, ref.Status, ref.Message, ref.RetryAfter)
	case errors.Is(err, login.ErrAudit):
		writeError(w, http.StatusServiceUnavailable, err.Error(), 0)
	case errors.Is(err, state.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error(), 0)
	case errors.Is(err, state.ErrExists), errors.Is(err, state.ErrInUse), errors.Is(err, state.ErrConflict):
		writeError(w, http.StatusConflict, err.Error(), 0)
	case errors.Is(err, state.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error(), 0)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, err.Error(), 0)
	default:
		writeError(w, http.StatusInternalServerError, err.Error(), 0)
	}
}

func writeError(w http.ResponseWriter, status int, msg string, retry time.Duration) {
	e := api.Error{Error: msg}
	if retry > 0 {
		secs := int((retry + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		e.RetryAfterSeconds = secs
	}
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encode answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
