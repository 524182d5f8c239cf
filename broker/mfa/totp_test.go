package mfa

import (
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// RFC 6238 appendix B: the SHA-1 secret "12345678901234567890" gives
// 94287082 at 59 s; its last six digits are the 6-digit code.
func TestCheckTOTPRFC6238(t *testing.T) {
	const secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ" // base32 of 12345678901234567890
	step, err := CheckTOTP(secret, "287082", time.Unix(59, 0))
	if err != nil || step != 1 {
		t.Fatalf("RFC vector: step %d, %v", step, err)
	}
	if _, err := CheckTOTP(secret, "287083", time.Unix(59, 0)); err == nil {
		t.Fatal("a wrong code was accepted")
	}
	// One step of skew either way, not two.
	if _, err := CheckTOTP(secret, "287082", time.Unix(59+Period, 0)); err != nil {
		t.Fatalf("previous step refused: %v", err)
	}
	if _, err := CheckTOTP(secret, "287082", time.Unix(59+2*Period+1, 0)); err == nil {
		t.Fatal("a code two steps old was accepted")
	}
	for _, bad := range []string{"", "12345", "1234567", "12a456"} {
		if _, err := CheckTOTP(secret, bad, time.Unix(59, 0)); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}

func TestNewTOTP(t *testing.T) {
	secret, url, err := NewTOTP("Tollgate", "alice")
	if err != nil {
		t.Fatal(err)
	}
	k, err := otp.NewKeyFromURL(url)
	if err != nil || k.Secret() != secret || k.AccountName() != "alice" || k.Issuer() != "Tollgate" {
		t.Fatalf("url %s: %v", url, err)
	}
	now := time.Now()
	code, err := totp.GenerateCode(secret, now)
	if err != nil {
		t.Fatal(err)
	}
	if step, err := CheckTOTP(secret, code, now); err != nil || step != now.Unix()/Period {
		t.Fatalf("fresh code: step %d, %v", step, err)
	}
}
