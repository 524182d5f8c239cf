package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
)

// ssoLogin logs in through connector f.auth, as tsh does: the broker's
// answer comes back through the browser to a loopback listener, sealed
// with a secret that only this process knows and that binds the answer to
// this attempt.
func ssoLogin(ctx context.Context, cmd *cobra.Command, f loginFlags, host string, hostCA *x509.Certificate) error {
	return browserLogin(ctx, cmd, f, host, hostCA, "single sign-on with "+f.auth, "sign in with "+f.auth, "tg login --auth="+f.auth,
		func(c *api.Client, pub string, lb *loopback) (string, error) {
			start, err := c.SSOLogin(ctx, api.SSOLoginRequest{Connector: f.auth, PublicKey: pub, Secret: lb.Secret(),
				RedirectURL: lb.url, TTL: api.Duration(f.ttl)})
			if err != nil {
				return "", err
			}
			return start.URL, nil
		})
}

// passkeyLogin signs in with a passkey alone: the browser runs the
// ceremony at the proxy's page and hands the certificate back, as for
// single sign-on.
func passkeyLogin(ctx context.Context, cmd *cobra.Command, f loginFlags, host string, hostCA *x509.Certificate) error {
	return browserLogin(ctx, cmd, f, host, hostCA, "passkey login", "sign in with your passkey", "tg login --passkey",
		func(c *api.Client, pub string, lb *loopback) (string, error) {
			start, err := c.PasskeyLogin(ctx, api.PasskeyLoginRequest{PublicKey: pub, RedirectURL: lb.url, Secret: lb.Secret(), TTL: api.Duration(f.ttl)})
			if err != nil {
				return "", err
			}
			return start.URL, nil
		})
}

// browserLogin is a login the browser completes: a fresh key, a loopback
// listener for the answer, begin asking the broker for the page to open
// (for the key, the listener's address and its secret), then the
// certificate the browser brings back. what names the login in errors,
// action tells the user what to do in the browser, command names the
// command that waits.
func browserLogin(ctx context.Context, cmd *cobra.Command, f loginFlags, host string, hostCA *x509.Certificate,
	what, action, command string, begin func(c *api.Client, pub string, lb *loopback) (string, error)) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	pub, err := api.EncodePublicKey(key.Public())
	if err != nil {
		return err
	}
	lb, err := startLoopback()
	if err != nil {
		return err
	}
	defer lb.Close()
	roots := x509.NewCertPool()
	roots.AddCert(hostCA)
	c, err := api.NewClient(f.proxy, api.TLSConfig(host, roots, nil), userAgent())
	if err != nil {
		return err
	}
	defer c.Close()
	url, err := begin(c, pub, lb)
	if err != nil {
		return err
	}
	openBrowser(cmd.ErrOrStderr(), action, url, f.browser)
	res, err := lb.wait(context.WithoutCancel(ctx), command)
	if err != nil {
		if res.err != nil {
			return fmt.Errorf("%s refused: %w", what, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if res.cert == nil {
		return fmt.Errorf("%s: the browser brought back no certificate", what)
	}
	return keepLogin(cmd, f.proxy, key, hostCA, res.cert)
}
