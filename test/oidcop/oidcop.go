// Package oidcop starts a real OpenID Provider on loopback for tests: the
// zitadel/oidc OP (certified implementation) with its example storage and
// login page, users with a "groups" claim in the user info, and hooks to
// mint tokens with the provider's own key or to alter its token answers,
// so that attacks on a relying party can be played against the real
// protocol.
package oidcop

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// User is a person the provider knows.
type User struct {
	Username, Password, Email string
	Groups                    []string
}

// Provider is a running OpenID Provider.
type Provider struct {
	// Issuer is the provider's issuer URL (http://127.0.0.1:PORT).
	Issuer string
	key    *rsa.PrivateKey

	mu     sync.Mutex
	tamper func(map[string]any)
}

// keyID names the provider's signing key in its key set.
const keyID = "oidcop-1"

// Start runs a provider until the test ends, with one confidential client
// (clientID, secret) allowed to redirect to redirectURIs.
func Start(tb testing.TB, clientID, secret string, redirectURIs []string, users ...User) *Provider {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	p := &Provider{Issuer: "http://" + ln.Addr().String(), key: key}
	us := userStore{byID: map[string]*storage.User{}, groups: map[string][]string{}}
	for i, u := range users {
		id := "u" + string(rune('1'+i))
		us.byID[id] = &storage.User{ID: id, Username: u.Username, Password: u.Password, Email: u.Email,
			EmailVerified: true, FirstName: u.Username, PreferredLanguage: language.English}
		us.groups[id] = u.Groups
	}
	st := &opStorage{
		Storage: storage.NewStorageWithClients(us, map[string]*storage.Client{clientID: storage.WebClient(clientID, secret, redirectURIs...)}),
		users:   us, p: p,
	}
	router := exampleop.SetupServer(p.Issuer, st, nil, false)
	srv := &http.Server{Handler: p.wrap(router), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return p
}

// TamperTokens makes fn change every answer of the token endpoint (nil
// stops it): the test then plays a provider, or a network, that lies.
func (p *Provider) TamperTokens(fn func(answer map[string]any)) {
	p.mu.Lock()
	p.tamper = fn
	p.mu.Unlock()
}

// wrap passes the token endpoint's answers through the tamper hook.
func (p *Provider) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		fn := p.tamper
		p.mu.Unlock()
		if fn == nil || r.URL.Path != "/oauth/token" {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		var m map[string]any
		if rec.Code == http.StatusOK && json.Unmarshal(body, &m) == nil {
			fn(m)
			body, _ = json.Marshal(m)
		}
		for k, vs := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = vs
			}
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	})
}

// Sign mints a JWT with the provider's own signing key: what a provider
// would sign, with any claims the test wants.
func (p *Provider) Sign(tb testing.TB, claims map[string]any) string {
	tb.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: p.key, KeyID: keyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		tb.Fatal(err)
	}
	b, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	jws, err := s.Sign(b)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Claims decodes the payload of a JWT the provider issued, unverified.
func Claims(tb testing.TB, jwt string) map[string]any {
	tb.Helper()
	t, err := jose.ParseSignedCompact(jwt, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(t.UnsafePayloadWithoutVerification(), &m); err != nil {
		tb.Fatal(err)
	}
	return m
}

// opStorage is the example storage with this provider's signing key (so
// tests can mint tokens) and groups in the user info.
type opStorage struct {
	*storage.Storage
	users userStore
	p     *Provider
}

func (s *opStorage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{s.p.key}, nil
}

func (s *opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *opStorage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{&s.p.key.PublicKey}}, nil
}

func (s *opStorage) SetUserinfoFromToken(ctx context.Context, ui *oidc.UserInfo, tokenID, subject, origin string) error {
	if err := s.Storage.SetUserinfoFromToken(ctx, ui, tokenID, subject, origin); err != nil {
		return err
	}
	if g := s.users.groups[ui.Subject]; len(g) > 0 {
		ui.AppendClaims("groups", g)
	}
	return nil
}

type signingKey struct{ k *rsa.PrivateKey }

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.k }
func (k signingKey) ID() string                                  { return keyID }

type publicKey struct{ k *rsa.PublicKey }

func (k publicKey) ID() string                         { return keyID }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.k }

type userStore struct {
	byID   map[string]*storage.User
	groups map[string][]string
}

func (s userStore) GetUserByID(id string) *storage.User { return s.byID[id] }

func (s userStore) GetUserByUsername(name string) *storage.User {
	for _, u := range s.byID {
		if u.Username == name {
			return u
		}
	}
	return nil
}

func (s userStore) ExampleClientID() string { return "" }
