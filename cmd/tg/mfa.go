package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/events"
)

func init() {
	m := &cobra.Command{Use: "mfa", Short: "Second factors of the logged-in user"}
	m.AddCommand(mfaAddCmd(), mfaLsCmd(), mfaRmCmd())
	root.AddCommand(m)
}

func mfaAddCmd() *cobra.Command {
	var code, typ, browser string
	c := &cobra.Command{
		Use:   "add [--type=totp|webauthn] [--code=CODE] [--browser=none]",
		Short: "Enroll an authenticator app (TOTP) or a security key (WebAuthn); later logins need it",
		Long: `Enroll a second factor; from then on tg login and the web sign-in need it.

--type=totp (the default): an authenticator app for one-time codes (TOTP,
RFC 6238). tg prints a secret and its otpauth:// URL once: add it to the app,
then give the code the app shows (--code, or typed when asked, or the first
line of standard input). tg login then needs --otp=CODE (or TG_OTP, or typed
when asked).

--type=webauthn: a security key or passkey. tg cannot reach the key itself:
it opens the browser at the proxy's page where the key registers
(--browser=none prints the URL instead), and waits for the browser to come
back to it. tg login then finishes in the browser with the key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch typ {
			case "totp", "":
			case "webauthn":
				if code != "" {
					return errors.New("--code is for --type=totp; a security key answers in the browser")
				}
			default:
				return fmt.Errorf("--type=%s: want totp or webauthn", typ)
			}
			if browser != "" && browser != "none" {
				return fmt.Errorf("--browser=%s: want none (print the URL) or leave it out", browser)
			}
			return withAPI(cmd, func(ctx context.Context, c *api.Client) error {
				if typ == "webauthn" {
					return addKey(ctx, cmd, c, browser)
				}
				en, err := c.BeginTOTP(ctx)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "Add this secret to your authenticator app (shown once):\n  secret: %s\n  url:    %s\n", en.Secret, en.URL)
				if code == "" {
					if stdinTerminal() {
						fmt.Fprint(cmd.ErrOrStderr(), "Code the app shows: ")
					}
					if code, err = firstLine(cmd.InOrStdin()); err != nil {
						return err
					}
				}
				if err := c.ConfirmTOTP(ctx, code); err != nil {
					return err
				}
				fmt.Fprintln(out, "authenticator enrolled: tg login now asks for its code")
				return nil
			})
		},
	}
	c.Flags().StringVar(&typ, "type", "totp", "totp (authenticator app) or webauthn (security key or passkey)")
	c.Flags().StringVar(&code, "code", "", "a code the app shows for the new secret (--type=totp)")
	c.Flags().StringVar(&browser, "browser", "", "none: print the URL of the registration page instead of opening a browser (--type=webauthn)")
	return c
}

// addKey registers a security key in the browser. The browser's word that
// it finished is not trusted alone: the broker's list must show a new key.
func addKey(ctx context.Context, cmd *cobra.Command, c *api.Client, browser string) error {
	before, err := c.Factors(ctx)
	if err != nil {
		return err
	}
	lb, err := startLoopback()
	if err != nil {
		return err
	}
	defer lb.Close()
	start, err := c.RegisterKey(ctx, api.BrowserRequest{RedirectURL: lb.url, Secret: lb.Secret()})
	if err != nil {
		return err
	}
	openBrowser(cmd.ErrOrStderr(), "register your security key", start.URL, browser)
	if _, err := lb.wait(context.WithoutCancel(ctx), "tg mfa add --type=webauthn"); err != nil {
		return fmt.Errorf("security key not registered: %w", err)
	}
	after, err := c.Factors(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	for _, f := range after {
		if f.Method == events.MFAWebAuthn && !slices.Contains(before, f) {
			fmt.Fprintf(cmd.OutOrStdout(), "security key %s registered: tg login now finishes with it in the browser\n", f.Name)
			return nil
		}
	}
	return errors.New("the browser said the key was registered, but the broker lists no new key")
}

func mfaLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List your second factors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAPI(cmd, func(ctx context.Context, c *api.Client) error {
				fs, err := c.Factors(ctx)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if len(fs) == 0 {
					fmt.Fprintln(out, "no second factor enrolled (tg mfa add)")
					return nil
				}
				fmt.Fprintf(out, "%-20s %s\n", "NAME", "METHOD")
				for _, f := range fs {
					fmt.Fprintf(out, "%-20s %s\n", f.Name, f.Method)
				}
				return nil
			})
		},
	}
}

func mfaRmCmd() *cobra.Command {
	var otp, browser string
	c := &cobra.Command{
		Use:   "rm NAME [--otp=CODE] [--browser=none]",
		Short: "Remove one of your second factors (tg mfa ls names them); needs a factor checked now",
		Long: `Remove a second factor named as tg mfa ls lists it. The certificate alone is
not enough: give a code of your authenticator app (--otp, or TG_OTP), or leave
it out to confirm with a security key in the browser (--browser=none prints
the URL). An administrator resets the factors of a user who lost them with
tollgate users reset-mfa.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if browser != "" && browser != "none" {
				return fmt.Errorf("--browser=%s: want none (print the URL) or leave it out", browser)
			}
			return withAPI(cmd, func(ctx context.Context, c *api.Client) error {
				if otp == "" {
					otp = os.Getenv("TG_OTP")
				}
				req := api.RemoveFactorRequest{Factor: args[0], OTP: otp}
				var (
					lb  *loopback
					err error
				)
				if otp == "" {
					if lb, err = startLoopback(); err != nil {
						return err
					}
					defer lb.Close()
					req.RedirectURL, req.Secret = lb.url, lb.Secret()
				}
				err = c.RemoveFactor(ctx, req)
				var se *api.StatusError
				if errors.As(err, &se) && se.BrowserURL != "" && lb != nil {
					openBrowser(cmd.ErrOrStderr(), "confirm the removal with your security key", se.BrowserURL, browser)
					if _, err = lb.wait(context.WithoutCancel(ctx), "tg mfa rm"); err != nil {
						return fmt.Errorf("not removed: %w", err)
					}
					// The browser's word is not trusted alone.
					fs, lerr := c.Factors(context.WithoutCancel(ctx))
					if lerr != nil {
						return lerr
					}
					if slices.ContainsFunc(fs, func(f api.Factor) bool { return f.Name == args[0] }) {
						return fmt.Errorf("the browser said %s was removed, but the broker still lists it", args[0])
					}
				} else if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "second factor %s removed\n", args[0])
				return nil
			})
		},
	}
	c.Flags().StringVar(&otp, "otp", "", "a code of your authenticator app, to prove a factor now (or TG_OTP)")
	c.Flags().StringVar(&browser, "browser", "", "none: print the URL of the security key's page instead of opening a browser")
	return c
}

// firstLine reads one line of r, without its end.
func firstLine(r io.Reader) (string, error) {
	if r == nil {
		r = os.Stdin
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimSpace(line)
	if line == "" {
		return "", errors.New("no code given (--code, or the first line of standard input)")
	}
	return line, nil
}
