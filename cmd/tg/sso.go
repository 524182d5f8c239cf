package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
)

// ssoWait bounds a single sign-on: the user types a password and maybe a
// second factor at the provider.
const ssoWait = 5 * time.Minute

// ssoLogin logs in through connector f.auth, as tsh does: the broker's
// answer comes back through the browser to a loopback listener, sealed
// with a secret that only this process knows and that binds the answer to
// this attempt.
func ssoLogin(ctx context.Context, cmd *cobra.Command, f loginFlags, host string, hostCA *x509.Certificate) error {
	stderr := cmd.ErrOrStderr()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	pub, err := api.EncodePublicKey(key.Public())
	if err != nil {
		return err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen on loopback for the sign-in's answer: %w", err)
	}
	defer ln.Close()
	// The callback path carries a random part too, so a page guessing the
	// port cannot even reach the handler.
	path := "/callback/" + base64.RawURLEncoding.EncodeToString(secret[:8])
	type result struct {
		cert *api.Certificate
		err  error
	}
	results := make(chan result, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
		var res result
		q := r.URL.Query()
		if msg := q.Get(api.SSOErrorParam); msg != "" {
			res.err = fmt.Errorf("single sign-on with %s refused: %s", f.auth, msg)
		} else if sealed := q.Get(api.SSOResponseParam); sealed != "" {
			res.cert, res.err = api.OpenSSO(secret, sealed)
		} else {
			res.err = errors.New("the browser came back without an answer")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		msg := "Signed in: you can close this window and return to the terminal."
		if res.err != nil {
			w.WriteHeader(http.StatusForbidden)
			msg = res.err.Error()
		}
		_ = donePage.Execute(w, msg)
		select {
		case results <- res:
		default: // the first answer counts
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	roots := x509.NewCertPool()
	roots.AddCert(hostCA)
	c, err := api.NewClient(f.proxy, api.TLSConfig(host, roots, nil), userAgent())
	if err != nil {
		return err
	}
	defer c.Close()
	start, err := c.SSOLogin(ctx, api.SSOLoginRequest{Connector: f.auth, PublicKey: pub, Secret: base64.RawURLEncoding.EncodeToString(secret),
		RedirectURL: "http://" + ln.Addr().String() + path, TTL: api.Duration(f.ttl)})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "Open this URL in a browser to sign in with %s:\n  %s\n", f.auth, start.URL)
	if f.browser != "none" {
		if err := exec.Command("xdg-open", start.URL).Start(); err != nil {
			fmt.Fprintf(stderr, "(could not open a browser: %v)\n", err)
		}
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ssoWait)
	defer cancel()
	select {
	case res := <-results:
		if res.err != nil {
			return res.err
		}
		return keepLogin(cmd, f.proxy, key, hostCA, res.cert)
	case <-wctx.Done():
		return fmt.Errorf("no sign-in within %s; run tg login --auth=%s again", ssoWait, f.auth)
	case <-cmd.Context().Done():
		return cmd.Context().Err()
	}
}

var donePage = template.Must(template.New("done").Parse(`<!doctype html><title>tg login</title><p id="tg-result">{{.}}</p>`))
