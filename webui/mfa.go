package webui

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/go-webauthn/webauthn/protocol"

	"github.com/tollgate-db/tollgate/broker/apiserver"
	"github.com/tollgate-db/tollgate/broker/login"
)

// webauthnCookie names the sign-in waiting for a security key: the ticket
// the broker gave for the right password. HttpOnly and SameSite=Strict, so
// only this site's page holding the challenge can finish it.
const webauthnCookie = "__Host-tollgate-webauthn"

type webauthnData struct {
	User, Next string
	// Ticket names a tg login finished here (tgkey.go).
	Ticket string
	// Passkey is a web sign-in with a passkey alone.
	Passkey bool
	Options *protocol.CredentialAssertion
}

// askKey shows the second step of a password sign-in: the page asks the
// security key to sign the broker's challenge.
func (u *UI) askKey(w http.ResponseWriter, csrf, user, next string, ch *login.WebAuthnChallenge) {
	setTicketCookie(w, ch.Ticket, 300)
	u.render(w, http.StatusOK, "webauthn", view{Title: "Security key", CSRF: csrf, Data: webauthnData{User: user, Next: next, Options: ch.Options}})
}

// loginKey finishes a sign-in with the security key's answer.
func (u *UI) loginKey(w http.ResponseWriter, r *http.Request) {
	u.finishKeySignIn(w, r, func(ctx context.Context, ticket string, answer []byte, pub crypto.PublicKey, m login.Meta) (*login.Issued, error) {
		return u.o.Login.LoginWebAuthn(ctx, ticket, answer, pub, 0, m)
	})
}

// finishKeySignIn takes the authenticator's answer to the challenge whose
// ticket the cookie holds (clearing it: a ticket serves once), has signIn
// check it and certify a fresh key, and signs the browser in.
func (u *UI) finishKeySignIn(w http.ResponseWriter, r *http.Request,
	signIn func(ctx context.Context, ticket string, answer []byte, pub crypto.PublicKey, m login.Meta) (*login.Issued, error)) {
	ck, err := r.Cookie(loginCookie)
	if err != nil || !u.postAllowed(r, ck.Value) {
		u.render(w, http.StatusForbidden, "error", view{Title: "Refused", Data: "The sign-in form's security token does not match; reload the sign-in page and try again."})
		return
	}
	var ticket string
	if t, err := r.Cookie(webauthnCookie); err == nil {
		ticket = t.Value
	}
	setTicketCookie(w, "", -1)
	next := safeNext(r.PostFormValue("next"))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	is, err := signIn(r.Context(), ticket, []byte(r.PostFormValue("credential")), key.Public(), apiserver.RequestMeta(r))
	if err != nil {
		u.render(w, refusalStatus(err), "login", view{Title: "Sign in", CSRF: ck.Value, Error: refusalText(err), Data: loginData{Next: next, Connectors: u.connectors()}})
		return
	}
	u.SignedIn(w, r, is.Cert, next)
}

// setTicketCookie keeps the ticket of a sign-in waiting for a security
// key or passkey for maxAge seconds (-1 clears it).
func setTicketCookie(w http.ResponseWriter, ticket string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: webauthnCookie, Value: ticket, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: maxAge})
}

// passkeyStart asks for a passkey: the sign-in page's CSRF cookie must be
// there, and the ticket goes in a cookie as for a security key's step.
func (u *UI) passkeyStart(w http.ResponseWriter, r *http.Request) {
	ck, err := r.Cookie(loginCookie)
	if err != nil {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	ch, err := u.o.Login.BeginWebPasskey()
	if err != nil {
		u.render(w, http.StatusServiceUnavailable, "error", view{Title: "Unavailable", Data: refusalText(err)})
		return
	}
	setTicketCookie(w, ch.Ticket, 300)
	u.render(w, http.StatusOK, "webauthn", view{Title: "Passkey", CSRF: ck.Value,
		Data: webauthnData{Passkey: true, Next: safeNext(r.URL.Query().Get("next")), Options: ch.Options}})
}

// loginPasskey finishes a passkey sign-in.
func (u *UI) loginPasskey(w http.ResponseWriter, r *http.Request) {
	u.finishKeySignIn(w, r, u.o.Login.LoginPasskey)
}

type mfaData struct{ Enrolled bool }

func (u *UI) mfaPage(w http.ResponseWriter, r *http.Request, c *caller) {
	us, _ := u.o.Store.User(c.id.User)
	u.render(w, http.StatusOK, "mfa", u.view(c, "Security keys", "mfa", mfaData{Enrolled: us.WebAuthn}))
}

// registerBegin answers the options of navigator.credentials.create.
func (u *UI) registerBegin(w http.ResponseWriter, r *http.Request, c *caller) {
	opts, err := u.o.Login.BeginWebAuthnRegistration(r.Context(), c.id)
	if err != nil {
		jsonError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, opts)
}

// registerFinish enrolls the key the browser created.
func (u *UI) registerFinish(w http.ResponseWriter, r *http.Request, c *caller) {
	if err := u.o.Login.FinishWebAuthnRegistration(r.Context(), c.id, []byte(r.PostFormValue("credential"))); err != nil {
		jsonError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"result": "registered"})
}

func jsonError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	var ref *login.Refusal
	if errors.As(err, &ref) {
		status = ref.Status
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
