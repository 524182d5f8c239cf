package webui

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/go-webauthn/webauthn/protocol"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/apiserver"
	"github.com/tollgate-db/tollgate/broker/login"
)

// The pages where a security key answers for tg, which cannot reach one
// itself: tg opens the browser here with a ticket (256 random bits, known
// only to tg and this browser), the page runs the WebAuthn ceremony, and
// the outcome goes back to tg's loopback listener, a certificate sealed
// with tg's secret. The ticket is the only credential of the page, so no
// web session or CSRF cookie is needed.

type tgKeyData struct {
	User, Ticket string
	Options      *protocol.CredentialAssertion
	Creation     *protocol.CredentialCreation
}

func (u *UI) tgKeyLogin(w http.ResponseWriter, r *http.Request) {
	ticket := r.URL.Query().Get("ticket")
	user, opts, ok := u.o.Login.KeyLoginPage(ticket)
	if !ok {
		u.render(w, http.StatusBadRequest, "error", view{Title: "Refused", Data: "This sign-in link is unknown, expired or already used; run tg login again."})
		return
	}
	u.render(w, http.StatusOK, "webauthn", view{Title: "Security key", Data: webauthnData{User: user, Ticket: ticket, Options: opts}})
}

func (u *UI) tgKeyLoginFinish(w http.ResponseWriter, r *http.Request) {
	is, b, err := u.o.Login.LoginWebAuthnBrowser(r.Context(), r.PostFormValue("ticket"), []byte(r.PostFormValue("credential")), apiserver.RequestMeta(r))
	if b == nil {
		u.render(w, refusalStatus(err), "error", view{Title: "Refused", Data: refusalText(err)})
		return
	}
	if err != nil {
		u.toTG(w, b, url.Values{api.SSOErrorParam: {refusalText(err)}})
		return
	}
	if is == nil {
		// A check that issues nothing (a factor's removal) is done.
		u.toTG(w, b, url.Values{api.SSODoneParam: {"1"}})
		return
	}
	cert, err := u.o.Admin.Certificate(is)
	if err == nil {
		var sealed string
		if sealed, err = api.SealSSO(b.Secret, cert); err == nil {
			u.toTG(w, b, url.Values{api.SSOResponseParam: {sealed}})
			return
		}
	}
	u.toTG(w, b, url.Values{api.SSOErrorParam: {"the certificate could not be handed over: " + err.Error()}})
}

func (u *UI) tgKeyRegister(w http.ResponseWriter, r *http.Request) {
	ticket := r.URL.Query().Get("ticket")
	user, creation, ok := u.o.Login.KeyRegisterPage(ticket)
	if !ok {
		u.render(w, http.StatusBadRequest, "error", view{Title: "Refused", Data: "This registration link is unknown, expired or already used; run tg mfa add --type=webauthn again."})
		return
	}
	u.render(w, http.StatusOK, "tgkey", view{Title: "Security key", Data: tgKeyData{User: user, Ticket: ticket, Creation: creation}})
}

func (u *UI) tgKeyRegisterFinish(w http.ResponseWriter, r *http.Request) {
	b, err := u.o.Login.FinishWebAuthnRegistrationBrowser(r.Context(), r.PostFormValue("ticket"), []byte(r.PostFormValue("credential")))
	switch {
	case b == nil:
		u.render(w, refusalStatus(err), "error", view{Title: "Refused", Data: refusalText(err)})
	case err != nil:
		u.toTG(w, b, url.Values{api.SSOErrorParam: {refusalText(err)}})
	default:
		u.toTG(w, b, url.Values{api.SSODoneParam: {"1"}})
	}
}

// toTG sends the browser on to tg's loopback listener. A page that moves
// on (Refresh) rather than a redirect: the form's page allows posting to
// this site only (CSP form-action), which a redirect elsewhere would break.
func (u *UI) toTG(w http.ResponseWriter, b *login.Browser, v url.Values) {
	to, err := url.Parse(b.RedirectURL)
	if err != nil {
		u.render(w, http.StatusInternalServerError, "error", view{Title: "Refused", Data: "tg's return address is not valid"})
		return
	}
	q := to.Query()
	for k, vs := range v {
		q[k] = vs
	}
	to.RawQuery = q.Encode()
	w.Header().Set("Refresh", "0;url="+to.String())
	u.render(w, http.StatusOK, "totg", view{Title: "Back to tg", Data: to.String()})
}

func refusalStatus(err error) int {
	var ref *login.Refusal
	if errors.As(err, &ref) {
		return ref.Status
	}
	return http.StatusInternalServerError
}

func refusalText(err error) string {
	var ref *login.Refusal
	if errors.As(err, &ref) {
		return ref.Message
	}
	return err.Error()
}
