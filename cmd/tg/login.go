package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/identity"
)

type loginFlags struct {
	proxy, user, invite string
	caPin, caFile       string
	insecure            bool
	ttl                 time.Duration
	otp                 string
	// auth names a single sign-on connector; browser "none" only prints
	// the URL to open.
	auth, browser string
	// passkey signs in with a passkey alone, in the browser.
	passkey bool
}

func init() {
	var f loginFlags
	c := &cobra.Command{
		Use:   "login --proxy=HOST:PORT (--user=NAME [--invite=TOKEN] | --auth=CONNECTOR [--browser=none]) [--ca-pin=sha256:HEX | --ca-file=FILE]",
		Short: "Log in with a password or single sign-on and keep a short-lived certificate under ~/.tg",
		Long: `Log in to a Tollgate proxy. tg generates a key on this machine, sends the
public half with the password, and keeps the certificate the broker signs, the
key and the CAs in ~/.tg/identity (mode 0600; ~/.tg is 0700). The first login
uses the one-time --invite an administrator gave you and sets your password.

The password is read from the terminal, or from the TG_PASSWORD environment
variable, or, when standard input is not a terminal, from its first line.

With --auth=CONNECTOR, tg logs in through the organisation's identity
provider instead: it opens the browser at the proxy (--browser=none prints the
URL to open instead), the proxy runs the sign-in with the provider, and the
browser hands the certificate back to tg on a loopback address, sealed with a
secret only this tg knows.

A user whose second factor is a security key or passkey (registered in the
web UI or with tg mfa add --type=webauthn) finishes a password login the same
way: tg opens the browser at the proxy's page where the key answers, and the
certificate comes back on the loopback address. With --passkey, a passkey
alone signs in (no user name or password): the key names the user and
verifies them with its PIN or biometrics.

Trusting the proxy: the proxy presents a certificate of the cluster's host CA.
tg trusts that CA when
  --ca-file FILE holds it, or
  --ca-pin sha256:HEX matches it (the invite command carries the pin), or
  an earlier login from this machine recorded it in ~/.tg/known_proxies.
Otherwise tg prints the CA's fingerprint and asks (on a terminal), or refuses;
--insecure trusts it without asking. Once trusted, the fingerprint is kept,
and a proxy showing another CA later is refused, as SSH does for host keys.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLogin(cmd, f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.proxy, "proxy", "", "proxy address HOST:PORT (default: that of the current login)")
	fl.StringVar(&f.user, "user", "", "user name (default: that of the current login, else the system user)")
	fl.StringVar(&f.invite, "invite", "", "one-time invite for the first login; sets the password")
	fl.StringVar(&f.caPin, "ca-pin", "", "fingerprint of the proxy's host CA, sha256:HEX")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM file of the proxy's host CA (tollgate auth export --type=host)")
	fl.BoolVar(&f.insecure, "insecure", false, "trust the proxy's host CA on first use without checking its fingerprint")
	fl.StringVar(&f.otp, "otp", "", "one-time code of your authenticator app, once enrolled (tg mfa add; or TG_OTP)")
	fl.BoolVar(&f.passkey, "passkey", false, "sign in with a passkey alone (no user name or password), in the browser")
	fl.StringVar(&f.auth, "auth", "", "single sign-on connector to log in with (tollgate sso ls names them)")
	fl.StringVar(&f.browser, "browser", "", "none: print the URL of the sign-in (single sign-on, security key) instead of opening a browser")
	fl.DurationVar(&f.ttl, "ttl", 0, "certificate lifetime (default and maximum set by the broker, 12h unless roles say otherwise)")
	root.AddCommand(c)
}

func runLogin(cmd *cobra.Command, f loginFlags) error {
	if flagIdentity != "" {
		return errors.New("tg login keeps its own identity under ~/.tg; -i is for using an identity file instead of logging in")
	}
	if cur, _, err := currentIdentity(); err == nil {
		if f.proxy == "" {
			f.proxy = cur.ProxyAddr
		}
		if f.user == "" && f.proxy == cur.ProxyAddr {
			f.user = cur.Identity.User
		}
	}
	if f.proxy == "" {
		return errors.New("--proxy=HOST:PORT is required")
	}
	host, err := api.ServerName(f.proxy)
	if err != nil {
		return fmt.Errorf("--proxy: %w", err)
	}
	if f.browser != "" && f.browser != "none" {
		return fmt.Errorf("--browser=%s: want none (print the URL) or leave it out", f.browser)
	}
	switch {
	case f.passkey && f.auth != "":
		return errors.New("--passkey and --auth are two ways to sign in: give one")
	case f.passkey && f.invite != "":
		return errors.New("--invite sets a password; it does not go with --passkey")
	case f.auth != "" && f.invite != "":
		return errors.New("--invite sets a password; it does not go with --auth")
	case f.auth == "" && !f.passkey && f.user == "":
		return errors.New("--user is required")
	}
	ctx, cancel := withTimeout(cmd.Context())
	defer cancel()

	hostCA, err := trustProxy(ctx, cmd, f, host)
	if err != nil {
		return err
	}
	if f.auth != "" {
		return ssoLogin(ctx, cmd, f, host, hostCA)
	}
	if f.passkey {
		return passkeyLogin(ctx, cmd, f, host, hostCA)
	}

	pw, err := readPassword(cmd, f.invite != "")
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	pub, err := api.EncodePublicKey(key.Public())
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(hostCA)
	c, err := api.NewClient(f.proxy, api.TLSConfig(host, roots, nil), userAgent())
	if err != nil {
		return err
	}
	defer c.Close()
	otp := f.otp
	if otp == "" {
		otp = os.Getenv("TG_OTP")
	}
	// A user whose second factor is a security key finishes in the
	// browser, which hands the certificate back here.
	lb, err := startLoopback()
	if err != nil {
		return err
	}
	defer lb.Close()
	req := api.LoginRequest{User: f.user, Password: pw, Invite: f.invite, OTP: otp, PublicKey: pub, TTL: api.Duration(f.ttl),
		RedirectURL: lb.url, Secret: lb.Secret()}
	res, err := c.Login(ctx, req)
	var se *api.StatusError
	if errors.As(err, &se) && se.BrowserURL != "" {
		openBrowser(cmd.ErrOrStderr(), "use your security key", se.BrowserURL, f.browser)
		r, err := lb.wait(context.WithoutCancel(ctx), "tg login")
		if err != nil {
			return fmt.Errorf("login with the security key: %w", err)
		}
		if r.cert == nil {
			return errors.New("login with the security key: the browser brought back no certificate")
		}
		return keepLogin(cmd, f.proxy, key, hostCA, r.cert)
	}
	if otp == "" && errors.As(err, &se) && se.Status == http.StatusForbidden && strings.Contains(se.Message, "one-time code") && stdinTerminal() {
		// The password was right and an authenticator is enrolled: ask.
		fmt.Fprint(cmd.ErrOrStderr(), "One-time code: ")
		if req.OTP, err = firstLine(os.Stdin); err != nil {
			return err
		}
		res, err = c.Login(ctx, req)
	}
	if err != nil {
		return err
	}
	return keepLogin(cmd, f.proxy, key, hostCA, res)
}

// keepLogin checks the broker's answer and keeps it in ~/.tg/identity.
func keepLogin(cmd *cobra.Command, proxy string, key *ecdsa.PrivateKey, hostCA *x509.Certificate, res *api.Certificate) error {
	stderr := cmd.ErrOrStderr()
	pin := api.Fingerprint(hostCA)
	cert, err := parseCert(res.CertPEM)
	if err != nil {
		return fmt.Errorf("the broker's answer: certificate: %w", err)
	}
	userCA, err := parseCert(res.UserCAPEM)
	if err != nil {
		return fmt.Errorf("the broker's answer: user CA: %w", err)
	}
	gotHostCA, err := parseCert(res.HostCAPEM)
	if err != nil {
		return fmt.Errorf("the broker's answer: host CA: %w", err)
	}
	if api.Fingerprint(gotHostCA) != pin {
		return fmt.Errorf("the broker names host CA %s but the proxy presented %s; refusing the login", api.Fingerprint(gotHostCA), pin)
	}
	file, err := identity.NewFile(proxy, key, cert, []*x509.Certificate{userCA, hostCA})
	if err != nil {
		return err
	}
	dir, err := ensureHome()
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "identity")
	if err := identity.WriteFile(path, file); err != nil {
		return err
	}
	if err := rememberProxy(proxy, pin); err != nil {
		return err
	}
	id := file.Identity
	fmt.Fprintf(cmd.OutOrStdout(), "logged in as %s (roles %s) at %s until %s\n", id.User, strings.Join(id.Roles, ","), proxy, id.Expires.Local().Format(time.RFC3339))
	fmt.Fprintf(stderr, "certificate and key in %s\n", path)
	if len(res.WithheldRoles) > 0 {
		fmt.Fprintf(stderr, "roles %s need a second factor and were left out: enroll an authenticator with tg mfa add, then log in again with its code\n",
			strings.Join(res.WithheldRoles, ","))
	}
	return nil
}

// trustProxy connects once to learn the proxy's host CA and decides
// whether to trust it (see the login help). It returns the trusted CA.
func trustProxy(ctx context.Context, cmd *cobra.Command, f loginFlags, host string) (*x509.Certificate, error) {
	stderr := cmd.ErrOrStderr()
	if f.caFile != "" {
		b, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		ca, err := parseCert(string(b))
		if err != nil {
			return nil, fmt.Errorf("--ca-file %s: %w", f.caFile, err)
		}
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		return ca, handshake(ctx, f.proxy, api.TLSConfig(host, roots, nil))
	}
	pin, source := "", ""
	if f.caPin != "" {
		p, err := api.ParsePin(f.caPin)
		if err != nil {
			return nil, fmt.Errorf("--ca-pin: %w", err)
		}
		pin, source = p, "--ca-pin"
	} else if p, err := knownProxy(f.proxy); err != nil {
		return nil, err
	} else if p != "" {
		pin, source = p, "~/.tg/known_proxies"
	}
	var seen *x509.Certificate
	decide := func(ca *x509.Certificate) error {
		seen = ca
		fp := api.Fingerprint(ca)
		switch {
		case pin != "" && fp == pin:
			return nil
		case pin != "":
			return fmt.Errorf("the proxy %s presents host CA %s, but %s says %s: the connection may be intercepted, or the cluster's CA was replaced; check with your administrator before trusting it",
				f.proxy, fp, source, pin)
		case f.insecure:
			fmt.Fprintf(stderr, "warning: trusting the proxy's host CA %s on first use (--insecure) without checking it\n", fp)
			return nil
		}
		fmt.Fprintf(stderr, "The proxy %s presents a certificate of the host CA %q\n  %s\n", f.proxy, ca.Subject.CommonName, fp)
		if !stdinTerminal() {
			return fmt.Errorf("the proxy's host CA %s is not trusted yet: check the fingerprint with your administrator (tollgate users add prints it) and pass --ca-pin=%s, or --ca-file", fp, fp)
		}
		fmt.Fprint(stderr, "Is this the fingerprint your administrator gave you? Trust it [y/N]: ")
		ans, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if a := strings.ToLower(strings.TrimSpace(ans)); a != "y" && a != "yes" {
			return errors.New("the proxy's host CA was not trusted; nothing was sent")
		}
		return nil
	}
	if err := handshake(ctx, f.proxy, api.FirstUseTLSConfig(host, decide, nil)); err != nil {
		return nil, err
	}
	if seen == nil {
		return nil, errors.New("the proxy presented no host CA")
	}
	return seen, nil
}

// handshake connects to the proxy and completes TLS, so the trust decision
// is made before the password is asked for or sent.
func handshake(ctx context.Context, proxy string, tc *tls.Config) error {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: tc}
	conn, err := d.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return fmt.Errorf("connect to the proxy %s: %w", proxy, err)
	}
	return conn.Close()
}

func stdinTerminal() bool { return term.IsTerminal(int(os.Stdin.Fd())) }

// readPassword reads the password: TG_PASSWORD, else the terminal (asked
// twice when it is being set), else the first line of standard input.
func readPassword(cmd *cobra.Command, setting bool) (string, error) {
	if pw, ok := os.LookupEnv("TG_PASSWORD"); ok {
		return pw, nil
	}
	stderr := cmd.ErrOrStderr()
	if stdinTerminal() {
		prompt := "Password: "
		if setting {
			prompt = "New password (at least 15 characters): "
		}
		fmt.Fprint(stderr, prompt)
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		if setting {
			fmt.Fprint(stderr, "Repeat the new password: ")
			b2, err := term.ReadPassword(int(os.Stdin.Fd()))
			fmt.Fprintln(stderr)
			if err != nil {
				return "", err
			}
			if string(b) != string(b2) {
				return "", errors.New("the passwords differ; nothing was sent")
			}
		}
		return string(b), nil
	}
	line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("no password: standard input is not a terminal and gave an empty first line (or set TG_PASSWORD)")
	}
	return line, nil
}

func parseCert(s string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}
