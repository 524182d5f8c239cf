package main

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

// TestMFAAdd enrolls an authenticator with tg mfa add (the code typed on
// standard input after the secret is shown), then tg login needs a code:
// without one, or with a wrong one, it fails saying so; with TG_OTP it
// logs in.
func TestMFAAdd(t *testing.T) {
	e := startE2E(t)
	out, _ := e.run(false, "", e.tgl, "users", "add", "alice", "--roles=access")
	m := regexp.MustCompile(`(?m)^\s*tg login (--proxy=\S+ --user=alice --invite=\S+ --ca-pin=\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no login command in %s", out)
	}
	e.extraEnv = []string{"TG_PASSWORD=" + password}
	e.run(false, "", e.tg, append([]string{"login"}, strings.Fields(m[1])...)...)

	cmd := exec.Command(e.tg, "mfa", "add")
	cmd.Env = []string{"HOME=" + e.home, "PATH=" + os.Getenv("PATH")}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var secret string
	var printed strings.Builder
	for sc.Scan() {
		printed.WriteString(sc.Text() + "\n")
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "secret:" {
			secret = f[1]
			break
		}
	}
	if secret == "" {
		t.Fatalf("tg mfa add printed no secret: %s %s", printed.String(), stderr.String())
	}
	now := time.Now()
	code, err := totp.GenerateCode(secret, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write([]byte(code + "\n")); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	for sc.Scan() {
		printed.WriteString(sc.Text() + "\n")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tg mfa add: %v\n%s%s", err, printed.String(), stderr.String())
	}
	mustContain(t, "tg mfa add", printed.String(), "otpauth://totp/Tollgate:alice", "authenticator enrolled")

	_, errOut := e.run(true, "", e.tg, "login")
	mustContain(t, "login without a code", errOut, "needs the one-time code", "--otp")
	e.extraEnv = []string{"TG_PASSWORD=" + password, "TG_OTP=000000"}
	if code == "000000" {
		e.extraEnv[1] = "TG_OTP=999999"
	}
	_, errOut = e.run(true, "", e.tg, "login")
	mustContain(t, "login with a wrong code", errOut, "one-time code is wrong")
	next, err := totp.GenerateCode(secret, now.Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e.extraEnv = nil
	out, _ = e.run(false, password+"\n", e.tg, "login", "--otp="+next)
	mustContain(t, "login with the code", out, "logged in as alice")
}
