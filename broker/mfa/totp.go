// Package mfa holds second factors: TOTP (RFC 6238) secrets and the check
// of a code, which tells the time step it matched so that the caller can
// refuse the same code twice.
package mfa

import (
	"crypto/subtle"
	"fmt"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// Period is the TOTP time step; Skew the steps accepted on either side of
// the current one, for clocks that drift and codes typed slowly.
const (
	Period = 30
	Skew   = 1
)

// NewTOTP makes a secret for user and the otpauth:// URL an authenticator
// app reads (usually from a QR code).
func NewTOTP(issuer, user string) (secret, url string, err error) {
	k, err := totp.Generate(totp.GenerateOpts{Issuer: issuer, AccountName: user, Period: Period, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return "", "", fmt.Errorf("totp: %w", err)
	}
	return k.Secret(), k.URL(), nil
}

// CheckTOTP returns the time step whose code code is, within Skew steps
// of now, or an error saying what is wrong with it.
func CheckTOTP(secret, code string, now time.Time) (int64, error) {
	code = strings.ReplaceAll(strings.TrimSpace(code), " ", "")
	if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
		return 0, fmt.Errorf("the one-time code must be 6 digits")
	}
	step := now.Unix() / Period
	for d := int64(-Skew); d <= Skew; d++ {
		at := time.Unix((step+d)*Period, 0)
		want, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: Period, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			return 0, fmt.Errorf("totp: %w", err)
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return step + d, nil
		}
	}
	return 0, fmt.Errorf("the one-time code is wrong or too old")
}
