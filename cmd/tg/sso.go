package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
)

// ssoLogin logs in through connector f.auth, as tsh does: the broker's
// answer comes back through the browser to a loopback listener, sealed
// with a secret that only this process knows and that binds the answer to
// this attempt.
func ssoLogin(ctx context.Context, cmd *cobra.Command, f loginFlags, host string, hostCA *x509.Certificate) error {
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
	start, err := c.SSOLogin(ctx, api.SSOLoginRequest{Connector: f.auth, PublicKey: pub, Secret: lb.Secret(),
		RedirectURL: lb.url, TTL: api.Duration(f.ttl)})
	if err != nil {
		return err
	}
	openBrowser(cmd.ErrOrStderr(), "sign in with "+f.auth, start.URL, f.browser)
	res, err := lb.wait(context.WithoutCancel(ctx), "tg login --auth="+f.auth)
	if err != nil {
		if res.err != nil {
			return fmt.Errorf("single sign-on with %s refused: %w", f.auth, err)
		}
		return err
	}
	if res.cert == nil {
		return fmt.Errorf("single sign-on with %s: the browser brought back no certificate", f.auth)
	}
	return keepLogin(cmd, f.proxy, key, hostCA, res.cert)
}

// passkeyLogin signs in with a passkey alone: the browser runs the
// ceremony at the proxy's page and hands the certificate back, as for
// single sign-on.
func passkeyLogin(ctx context.Context, cmd *cobra.Command, f loginFlags, host string, hostCA *x509.Certificate) error {
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
	start, err := c.PasskeyLogin(ctx, api.PasskeyLoginRequest{PublicKey: pub, RedirectURL: lb.url, Secret: lb.Secret(), TTL: api.Duration(f.ttl)})
	if err != nil {
		return err
	}
	openBrowser(cmd.ErrOrStderr(), "sign in with your passkey", start.URL, f.browser)
	res, err := lb.wait(context.WithoutCancel(ctx), "tg login --passkey")
	if err != nil {
		return fmt.Errorf("passkey login: %w", err)
	}
	if res.cert == nil {
		return errors.New("passkey login: the browser brought back no certificate")
	}
	return keepLogin(cmd, f.proxy, key, hostCA, res.cert)
}
