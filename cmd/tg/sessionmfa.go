package main

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/identity"
)

// sessionFile returns, for a database whose session needs a second factor
// (a role with require_session_mfa), the identity to connect with: the
// same key and CAs, and a certificate the broker issues for this database
// and database user after checking a factor, valid a minute to start the
// session. Otherwise it returns id as it is.
func sessionFile(ctx context.Context, cmd *cobra.Command, id *identity.File, db api.Database, dbUser string, f dbFlags) (*identity.File, error) {
	if !db.SessionMFA {
		return id, nil
	}
	if dbUser == "" {
		return nil, fmt.Errorf("a role of yours needs a second factor for each session on %s, and the certificate it gets is for one database user: give --db-user", db.Name)
	}
	key, ok := id.Cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("the identity's key cannot sign")
	}
	pub, err := api.EncodePublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	c, err := apiClient(id)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	otp := f.otp
	if otp == "" {
		otp = os.Getenv("TG_OTP")
	}
	req := api.SessionCertRequest{Database: db.Name, DBUser: dbUser, PublicKey: pub, OTP: otp}
	var lb *loopback
	if otp == "" {
		// Without a code, a security key may answer in the browser.
		if lb, err = startLoopback(); err != nil {
			return nil, err
		}
		defer lb.Close()
		req.RedirectURL, req.Secret = lb.url, lb.Secret()
	}
	res, err := c.SessionCert(ctx, req)
	var se *api.StatusError
	switch {
	case err == nil:
	case errors.As(err, &se) && se.BrowserURL != "" && lb != nil:
		openBrowser(cmd.ErrOrStderr(), "confirm this session to "+db.Name+" with your security key", se.BrowserURL, f.browser)
		r, werr := lb.wait(context.WithoutCancel(ctx), "the command")
		if werr != nil {
			return nil, fmt.Errorf("second factor for the session: %w", werr)
		}
		if r.cert == nil {
			return nil, errors.New("second factor for the session: the browser brought back no certificate")
		}
		res = r.cert
	case errors.As(err, &se) && se.Status == http.StatusForbidden && strings.Contains(se.Message, "--otp") && stdinTerminal():
		fmt.Fprintf(cmd.ErrOrStderr(), "One-time code for the session to %s: ", db.Name)
		if req.OTP, err = firstLine(os.Stdin); err != nil {
			return nil, err
		}
		req.RedirectURL, req.Secret = "", ""
		if res, err = c.SessionCert(ctx, req); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	cert, err := parseCert(res.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("the broker's answer: certificate: %w", err)
	}
	if got, err := identity.FromCertificate(cert); err != nil || got.MFASession == nil || got.MFASession.Database != db.Name || got.MFASession.DBUser != dbUser {
		return nil, errors.New("the broker's answer is not a certificate for this session")
	}
	if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		return nil, errors.New("the broker's answer certifies another key")
	}
	sf, err := identity.NewFile(id.ProxyAddr, key, cert, id.CACerts)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "second factor checked (%s): a certificate for %s as %s until %s\n",
		sf.Identity.MFASession.Method, db.Name, dbUser, cert.NotAfter.Local().Format("15:04:05"))
	return sf, nil
}
