package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func init() {
	m := &cobra.Command{Use: "mfa", Short: "Second factors of the logged-in user"}
	m.AddCommand(mfaAddCmd())
	root.AddCommand(m)
}

func mfaAddCmd() *cobra.Command {
	var code string
	c := &cobra.Command{
		Use:   "add [--code=CODE]",
		Short: "Enroll an authenticator app (TOTP); later logins need its code",
		Long: `Enroll an authenticator app for one-time codes (TOTP, RFC 6238). tg prints
a secret and its otpauth:// URL once: add it to the app, then give the code the
app shows (--code, or typed when asked, or the first line of standard input).
From then on, tg login needs --otp=CODE (or TG_OTP, or typed when asked).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, _, c, err := requestClient()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := withTimeout(cmd.Context())
			defer cancel()
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
		},
	}
	c.Flags().StringVar(&code, "code", "", "a code the app shows for the new secret")
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
