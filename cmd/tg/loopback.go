package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"os/exec"
	"time"

	"github.com/tollgate-db/tollgate/broker/api"
)

// browserWait bounds a step done in the browser: the user types a password
// and maybe a second factor at the provider, or touches a key.
const browserWait = 5 * time.Minute

// loopback is where the browser hands tg the outcome of a step tg cannot
// do itself (single sign-on, a security key), as tsh does: a listener on
// a loopback address, at a path with a random part, and a secret that
// only this process knows and that seals a certificate for this attempt.
type loopback struct {
	secret  []byte
	url     string
	results chan loopbackResult
	srv     *http.Server
}

// loopbackResult is what the browser brought back: a certificate, or the
// word that a ceremony without one finished, or a refusal.
type loopbackResult struct {
	cert *api.Certificate
	done bool
	err  error
}

func startLoopback() (*loopback, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on loopback for the browser's answer: %w", err)
	}
	// The callback path carries a random part too, so a page guessing the
	// port cannot even reach the handler.
	path := "/callback/" + base64.RawURLEncoding.EncodeToString(secret[:8])
	l := &loopback{secret: secret, url: "http://" + ln.Addr().String() + path, results: make(chan loopbackResult, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
		var res loopbackResult
		q := r.URL.Query()
		switch {
		case q.Get(api.SSOErrorParam) != "":
			res.err = errors.New(q.Get(api.SSOErrorParam))
		case q.Get(api.SSOResponseParam) != "":
			res.cert, res.err = api.OpenSSO(secret, q.Get(api.SSOResponseParam))
		case q.Get(api.SSODoneParam) != "":
			res.done = true
		default:
			res.err = errors.New("the browser came back without an answer")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		msg := "Done: you can close this window and return to the terminal."
		if res.cert != nil {
			msg = "Signed in: you can close this window and return to the terminal."
		}
		if res.err != nil {
			w.WriteHeader(http.StatusForbidden)
			msg = res.err.Error()
		}
		_ = donePage.Execute(w, msg)
		// The page reaches the browser before tg moves on and closes the
		// listener.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		select {
		case l.results <- res:
		default: // the first answer counts
		}
	})
	l.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = l.srv.Serve(ln) }()
	return l, nil
}

// Close stops the listener, letting a page being sent finish: closing at
// once could reset the browser's connection before it shows the page.
func (l *loopback) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if l.srv.Shutdown(ctx) != nil {
		_ = l.srv.Close()
	}
}

// Secret is the secret as the API carries it.
func (l *loopback) Secret() string { return base64.RawURLEncoding.EncodeToString(l.secret) }

// open shows the URL of what to do in the browser, and opens it unless
// browser is "none".
func openBrowser(stderr io.Writer, what, u, browser string) {
	fmt.Fprintf(stderr, "Open this URL in a browser to %s:\n  %s\n", what, u)
	if browser != "none" {
		if err := exec.Command("xdg-open", u).Start(); err != nil {
			fmt.Fprintf(stderr, "(could not open a browser: %v)\n", err)
		}
	}
}

// wait waits for the browser's answer; again says what to run when none
// comes.
func (l *loopback) wait(ctx context.Context, again string) (loopbackResult, error) {
	wctx, cancel := context.WithTimeout(ctx, browserWait)
	defer cancel()
	select {
	case res := <-l.results:
		return res, res.err
	case <-wctx.Done():
		if ctx.Err() != nil {
			return loopbackResult{}, ctx.Err()
		}
		return loopbackResult{}, fmt.Errorf("nothing came back from the browser within %s; run %s again", browserWait, again)
	}
}

var donePage = template.Must(template.New("done").Parse(`<!doctype html><title>tg</title><p id="tg-result">{{.}}</p>`))
