// Package oidcflow runs the browser side of a single sign-on: for OpenID
// Connect the authorization code flow with PKCE, its state bound to the
// browser that started it and used once, the nonce checked in the ID token;
// for SAML 2.0 the SP-initiated flow (saml.go), its request id bound to the
// browser and used once. Either way the claims are mapped to roles, and the
// certificate handed to the web UI or, sealed, to the tg that started the
// attempt through its loopback callback.
package oidcflow

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/apiserver"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/sso"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/events"
)

const (
	// attemptTTL bounds a login from tg's request (or the sign-in click)
	// to the provider's callback: long enough to type a password and a
	// second factor at the provider.
	attemptTTL = 10 * time.Minute
	// maxAttempts bounds the attempts held in memory: starting one needs
	// no credential.
	maxAttempts = 10000
	// bindCookie ties the callback to the browser that was sent to the
	// provider, so a state or code lifted from one browser cannot finish
	// a login in another. SameSite=Lax: the provider's redirect back is a
	// cross-site top-level navigation.
	bindCookie = "__Host-tollgate-sso"
)

// Web is the web UI's side of a sign-in.
type Web interface {
	// SignedIn makes the certificate the browser's session and sends it
	// on to next.
	SignedIn(w http.ResponseWriter, r *http.Request, cert *x509.Certificate, next string)
	// Refused shows why a sign-in failed.
	Refused(w http.ResponseWriter, r *http.Request, status int, msg string)
}

// Options are what the flow needs of the broker.
type Options struct {
	Store *state.Store
	Login *login.Service
	// Certificate turns an issued certificate into the API's answer.
	Certificate func(*login.Issued) (*api.Certificate, error)
	// ProxyAddr is the public HOST:PORT browsers reach the broker at.
	ProxyAddr string
	// HTTPClient reaches the providers; nil means http.DefaultClient.
	HTTPClient *http.Client
	Log        *slog.Logger
	Now        func() time.Time
}

// Service is the flow's handler state.
type Service struct {
	o   Options
	web Web

	mu sync.Mutex
	// pending are tg's attempts by id, not yet opened in a browser;
	// flows are attempts sent to a provider, by state.
	pending map[string]*attempt
	flows   map[string]*attempt
}

// attempt is one login in progress.
type attempt struct {
	connector string
	created   time.Time
	// Set when the browser is sent to the provider.
	state, nonce, verifier, binding string
	// requestID is the id of a SAML attempt's AuthnRequest, which the
	// response must answer (InResponseTo).
	requestID string
	// A tg attempt: the key to certify, the loopback URL and the secret
	// that seals the answer.
	tg       bool
	pub      any
	redirect string
	secret   []byte
	ttl      time.Duration
	// A web attempt: where to go once signed in.
	next string
}

// Mount serves the flow on the API's server: POST /v1/sso/login for tg,
// and the browser paths /sso/oidc/{name}/login and /callback.
func Mount(srv *apiserver.Server, o Options) *Service {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	s := &Service{o: o, pending: map[string]*attempt{}, flows: map[string]*attempt{}}
	srv.Handle("POST "+api.PathSSOLogin, http.HandlerFunc(s.startTG))
	srv.Handle("GET "+sso.LoginPath("{name}"), http.HandlerFunc(s.start))
	srv.Handle("GET "+sso.CallbackPath("{name}"), http.HandlerFunc(s.callback))
	srv.Handle("GET "+sso.SAMLLoginPath("{name}"), http.HandlerFunc(s.samlStart))
	srv.Handle("POST "+sso.SAMLACSPath("{name}"), http.HandlerFunc(s.samlACS))
	srv.Handle("GET "+sso.SAMLMetadataPath("{name}"), http.HandlerFunc(s.samlMetadata))
	return s
}

// SetWeb connects the web UI, which is mounted after the flow.
func (s *Service) SetWeb(w Web) { s.web = w }

func random() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// startTG registers tg's attempt and answers the URL its browser opens.
func (s *Service) startTG(w http.ResponseWriter, r *http.Request) {
	var req api.SSOLoginRequest
	if !apiserver.Decode(w, r, &req) {
		return
	}
	c, ok := s.o.Store.Connector(req.Connector)
	if !ok {
		apiserver.WriteError(w, http.StatusNotFound, fmt.Sprintf("no single sign-on connector %q (an administrator adds one with tollgate sso add)", req.Connector))
		return
	}
	pub, err := api.DecodePublicKey(req.PublicKey)
	if err == nil {
		err = login.CheckPublicKey(pub)
	}
	if err != nil {
		apiserver.WriteError(w, http.StatusBadRequest, "sso login: "+err.Error())
		return
	}
	if err := api.CheckLoopback(req.RedirectURL); err != nil {
		apiserver.WriteError(w, http.StatusBadRequest, "sso login: "+err.Error())
		return
	}
	secret, err := base64.RawURLEncoding.DecodeString(req.Secret)
	if err != nil || len(secret) != 32 {
		apiserver.WriteError(w, http.StatusBadRequest, "sso login: secret: want base64url of 32 random bytes")
		return
	}
	if req.TTL < 0 {
		apiserver.WriteError(w, http.StatusBadRequest, "sso login: ttl is negative")
		return
	}
	id := random()
	a := &attempt{connector: req.Connector, created: s.o.Now(), tg: true, pub: pub, redirect: req.RedirectURL, secret: secret, ttl: req.TTL.Std()}
	if !s.put(s.pending, id, a) {
		apiserver.WriteError(w, http.StatusServiceUnavailable, "too many single sign-on logins in progress; try again in a few minutes")
		return
	}
	u := url.URL{Scheme: "https", Host: s.o.ProxyAddr, Path: sso.ConnectorLoginPath(c), RawQuery: url.Values{"attempt": {id}}.Encode()}
	apiserver.Respond(w, api.SSOLoginResponse{URL: u.String()}, nil)
}

// put stores a under key, dropping expired attempts first; false when too
// many are held.
func (s *Service) put(m map[string]*attempt, key string, a *attempt) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.o.Now()
	for _, mm := range []map[string]*attempt{s.pending, s.flows} {
		for k, x := range mm {
			if now.Sub(x.created) > attemptTTL {
				delete(mm, k)
			}
		}
	}
	if len(s.pending)+len(s.flows) >= maxAttempts {
		return false
	}
	m[key] = a
	return true
}

// take removes and returns the attempt under key: every attempt is used
// once, whatever the outcome.
func (s *Service) take(m map[string]*attempt, key string) *attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := m[key]
	if !ok {
		return nil
	}
	delete(m, key)
	if s.o.Now().Sub(a.created) > attemptTTL {
		return nil
	}
	return a
}

// refusal is a failed login: what the user is told and what the audit
// trail records.
type refusal struct {
	status int
	reason string
	msg    string
	detail string
}

// start sends the browser to the provider: with ?attempt= for tg's
// attempt, else for a web sign-in.
func (s *Service) start(w http.ResponseWriter, r *http.Request) {
	x := login.External{Method: events.LoginOIDC, Connector: r.PathValue("name"), Meta: apiserver.RequestMeta(r)}
	a, c, ok := s.begin(w, r, x, sso.TypeOIDC)
	if !ok {
		return
	}
	name := c.Name
	conf, _, err := s.config(r.Context(), c)
	if err != nil {
		s.refuse(w, r, x, a, refusal{http.StatusBadGateway, events.LoginSSOProviderError,
			fmt.Sprintf("the identity provider of %s cannot be reached: %v", name, err), "discovery: " + err.Error()})
		return
	}
	a.state, a.nonce, a.verifier, a.binding = random(), random(), oauth2.GenerateVerifier(), random()
	if !s.put(s.flows, a.state, a) {
		s.refuse(w, r, x, a, refusal{http.StatusServiceUnavailable, events.LoginBadRequest,
			"too many single sign-on logins in progress; try again in a few minutes", "too many attempts"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: bindCookie, Value: a.binding, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteLaxMode, MaxAge: int(attemptTTL / time.Second)})
	http.Redirect(w, r, conf.AuthCodeURL(a.state, oidc.Nonce(a.nonce), oauth2.S256ChallengeOption(a.verifier)), http.StatusSeeOther)
}

// begin takes the attempt a browser starts (tg's, named by ?attempt=, or a
// new web sign-in) and the connector of the path, which must be of type
// typ; false when it refused.
func (s *Service) begin(w http.ResponseWriter, r *http.Request, x login.External, typ string) (*attempt, api.Connector, bool) {
	name := x.Connector
	var a *attempt
	if id := r.URL.Query().Get("attempt"); id != "" {
		if a = s.take(s.pending, id); a == nil || a.connector != name {
			s.refuse(w, r, x, nil, refusal{http.StatusBadRequest, events.LoginSSOBadState,
				"this login link is unknown, expired or was already opened; run tg login again", "unknown, expired or reused attempt"})
			return nil, api.Connector{}, false
		}
	} else {
		a = &attempt{connector: name, created: s.o.Now(), next: safeNext(r.URL.Query().Get("next"))}
	}
	c, ok := s.o.Store.Connector(name)
	if !ok || c.Type != typ {
		s.refuse(w, r, x, a, refusal{http.StatusNotFound, events.LoginSSOUnknownConnector,
			fmt.Sprintf("no %s single sign-on connector %q", typ, name), "unknown connector"})
		return nil, api.Connector{}, false
	}
	return a, c, true
}

// config discovers the provider and makes the OAuth 2.0 configuration of
// connector c.
func (s *Service) config(ctx context.Context, c api.Connector) (*oauth2.Config, *oidc.Provider, error) {
	ctx = oidc.ClientContext(ctx, s.o.HTTPClient)
	p, err := oidc.NewProvider(ctx, c.IssuerURL)
	if err != nil {
		return nil, nil, err
	}
	secret, err := s.o.Store.ConnectorSecret(ctx, c.Name)
	if err != nil {
		return nil, nil, err
	}
	redirect := c.RedirectURL
	if redirect == "" {
		redirect = (&url.URL{Scheme: "https", Host: s.o.ProxyAddr, Path: sso.CallbackPath(c.Name)}).String()
	}
	scopes := append([]string{oidc.ScopeOpenID}, c.Scopes...)
	return &oauth2.Config{ClientID: c.ClientID, ClientSecret: secret, Endpoint: p.Endpoint(), RedirectURL: redirect, Scopes: scopes}, p, nil
}

// callback finishes the login the provider sends the browser back from.
func (s *Service) callback(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	q := r.URL.Query()
	x := login.External{Method: events.LoginOIDC, Connector: name, Meta: apiserver.RequestMeta(r)}
	a := s.take(s.flows, q.Get("state"))
	if a == nil || a.connector != name {
		s.refuse(w, r, x, nil, refusal{http.StatusBadRequest, events.LoginSSOBadState,
			"this sign-in is unknown, expired or was already used; start again", "unknown, expired or reused state"})
		return
	}
	if ck, err := r.Cookie(bindCookie); err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(a.binding)) != 1 {
		s.refuse(w, r, x, a, refusal{http.StatusBadRequest, events.LoginSSOBadState,
			"this sign-in was not started by this browser; start again", "state presented without the browser binding of its attempt"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: bindCookie, Value: "", Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode, MaxAge: -1})
	if e := q.Get("error"); e != "" {
		d := clip(e+": "+q.Get("error_description"), 300)
		s.refuse(w, r, x, a, refusal{http.StatusForbidden, events.LoginSSOProviderError,
			"the identity provider refused the sign-in: " + d, "provider error " + d})
		return
	}
	c, ok := s.o.Store.Connector(name)
	if !ok || c.Type != sso.TypeOIDC {
		s.refuse(w, r, x, a, refusal{http.StatusNotFound, events.LoginSSOUnknownConnector,
			fmt.Sprintf("no single sign-on connector %q (removed during the sign-in?)", name), "unknown connector"})
		return
	}
	id, ref := s.verify(r.Context(), c, a, q.Get("code"))
	if ref != nil {
		x.Identity.User = id.Identity.User
		s.refuse(w, r, x, a, *ref)
		return
	}
	x.Identity, x.MFA = id.Identity, id.MFA
	s.finish(w, r, a, x)
}

// finish issues the certificate of a verified login x: the web UI's
// session, or sealed for the tg that started attempt a.
func (s *Service) finish(w http.ResponseWriter, r *http.Request, a *attempt, x login.External) {
	x.TTL = a.ttl
	if !a.tg {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		x.PublicKey = key.Public()
		is, err := s.o.Login.LoginExternal(r.Context(), x)
		if err != nil {
			s.failed(w, r, a, err)
			return
		}
		s.web.SignedIn(w, r, is.Cert, a.next)
		return
	}
	x.PublicKey = a.pub
	is, err := s.o.Login.LoginExternal(r.Context(), x)
	if err != nil {
		s.failed(w, r, a, err)
		return
	}
	cert, err := s.o.Certificate(is)
	if err != nil {
		s.failed(w, r, a, err)
		return
	}
	sealed, err := api.SealSSO(a.secret, cert)
	if err != nil {
		s.failed(w, r, a, err)
		return
	}
	s.toTG(w, r, a, url.Values{api.SSOResponseParam: {sealed}})
}

// verify exchanges the code (with the PKCE verifier) and checks the ID
// token: signature, issuer, audience, expiry (go-oidc) and the nonce.
// The user info endpoint's claims complete the token's, as providers keep
// profile claims out of ID tokens issued with an access token.
func (s *Service) verify(ctx context.Context, c api.Connector, a *attempt, code string) (login.External, *refusal) {
	var out login.External
	if code == "" {
		return out, &refusal{http.StatusBadRequest, events.LoginSSOCodeRejected, "the identity provider sent no authorization code", "no code"}
	}
	conf, p, err := s.config(ctx, c)
	if err != nil {
		return out, &refusal{http.StatusBadGateway, events.LoginSSOProviderError,
			"the identity provider cannot be reached: " + err.Error(), "discovery: " + err.Error()}
	}
	cctx := oidc.ClientContext(ctx, s.o.HTTPClient)
	tok, err := conf.Exchange(cctx, code, oauth2.VerifierOption(a.verifier))
	if err != nil {
		return out, &refusal{http.StatusForbidden, events.LoginSSOCodeRejected,
			"the identity provider did not accept the authorization code (used already, expired, or not issued for this sign-in); start again",
			"code exchange: " + exchangeError(err)}
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return out, &refusal{http.StatusForbidden, events.LoginSSOBadToken, "the identity provider returned no ID token", "no id_token in the token response"}
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: c.ClientID, Now: s.o.Now}).Verify(cctx, raw)
	if err != nil {
		return out, &refusal{http.StatusForbidden, events.LoginSSOBadToken, "the identity provider's ID token is not valid: " + err.Error(), "id token: " + err.Error()}
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(a.nonce)) != 1 {
		return out, &refusal{http.StatusForbidden, events.LoginSSOBadNonce, "the ID token was not issued for this sign-in (nonce differs); start again", "nonce mismatch"}
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return out, &refusal{http.StatusForbidden, events.LoginSSOBadToken, "the ID token's claims cannot be read: " + err.Error(), "claims: " + err.Error()}
	}
	if p.UserInfoEndpoint() != "" {
		ui, err := p.UserInfo(cctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			return out, &refusal{http.StatusBadGateway, events.LoginSSOProviderError, "the identity provider's user info failed: " + err.Error(), "userinfo: " + err.Error()}
		}
		if ui.Subject != idt.Subject {
			return out, &refusal{http.StatusForbidden, events.LoginSSOBadToken, "the user info names another subject than the ID token", "userinfo subject differs"}
		}
		extra := map[string]any{}
		if err := ui.Claims(&extra); err == nil {
			for k, v := range extra {
				if _, ok := claims[k]; !ok {
					claims[k] = v
				}
			}
		}
	}
	id, err := sso.Identity(c, claims)
	if err != nil {
		var me *sso.MappingError
		if errors.As(err, &me) {
			out.Identity.User = me.User
		}
		ref := mappingRefusal(err)
		return out, &ref
	}
	out.Identity = id
	// RFC 8176: "mfa" in amr says the provider checked more than one
	// factor; roles with require_mfa are granted only then.
	if slices.Contains(claimStrings(claims["amr"]), "mfa") {
		out.MFA = events.MFAProvider
	}
	return out, nil
}

// exchangeError keeps the provider's error code of a failed exchange, not
// its whole answer.
func exchangeError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorCode != "" {
			return clip(re.ErrorCode+" "+re.ErrorDescription, 300)
		}
		return fmt.Sprintf("HTTP %d", re.Response.StatusCode)
	}
	return clip(err.Error(), 300)
}

// refuse records a refused login and tells the user.
func (s *Service) refuse(w http.ResponseWriter, r *http.Request, x login.External, a *attempt, ref refusal) {
	s.o.Login.RefuseExternal(r.Context(), x, &login.Refusal{Status: ref.status, Message: ref.msg, Reason: ref.reason, Detail: ref.detail})
	s.tell(w, r, a, ref.status, ref.msg)
}

// failed answers an error of the login service, which audited it.
func (s *Service) failed(w http.ResponseWriter, r *http.Request, a *attempt, err error) {
	status := http.StatusInternalServerError
	var ref *login.Refusal
	if errors.As(err, &ref) {
		status = ref.Status
	} else if errors.Is(err, login.ErrAudit) {
		status = http.StatusServiceUnavailable
	}
	s.o.Log.Warn("single sign-on failed", "err", err)
	s.tell(w, r, a, status, err.Error())
}

// tell shows msg: to tg through its loopback when the attempt is tg's,
// else on a page.
func (s *Service) tell(w http.ResponseWriter, r *http.Request, a *attempt, status int, msg string) {
	if a != nil && a.tg {
		s.toTG(w, r, a, url.Values{api.SSOErrorParam: {msg}})
		return
	}
	if s.web != nil {
		s.web.Refused(w, r, status, msg)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = plainPage.Execute(w, msg)
}

var plainPage = template.Must(template.New("refused").Parse(`<!doctype html><title>Sign-in refused</title><p id="error">{{.}}</p>`))

// toTG sends the browser to tg's loopback listener with v.
func (s *Service) toTG(w http.ResponseWriter, r *http.Request, a *attempt, v url.Values) {
	u, err := url.Parse(a.redirect)
	if err != nil {
		http.Error(w, "bad redirect", http.StatusInternalServerError)
		return
	}
	q := u.Query()
	for k, vs := range v {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// claimStrings reads a claim that is a list of strings.
func claimStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, e := range l {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// safeNext keeps a return path on this site (as the web UI's sign-in).
func safeNext(p string) string {
	if len(p) < 1 || p[0] != '/' || (len(p) > 1 && (p[1] == '/' || p[1] == '\\')) {
		return "/"
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return "/"
		}
	}
	return p
}
