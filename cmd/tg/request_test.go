package main

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRequestWorkflow: alice (requester) asks for the access role and
// waits; bob (reviewer) sees the request and approves it; alice's tg
// takes the role at once with a certificate that names the request, and
// `tollgate requests ls` shows it approved. Nobody reviews their own
// request, and tg login --request-id refuses a request that grants
// nothing.
func TestRequestWorkflow(t *testing.T) {
	e := startE2E(t)
	login := func(user, home string) {
		t.Helper()
		out, _ := e.run(false, "", e.tgl, "users", "add", user, "--roles="+map[string]string{"alice": "requester", "bob": "reviewer"}[user])
		m := regexp.MustCompile(`(?m)^\s*tg (login --proxy=\S+ --user=\S+ --invite=\S+ --ca-pin=\S+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no login command in:\n%s", out)
		}
		e.home = home
		e.extraEnv = []string{"TG_PASSWORD=" + password}
		e.run(false, "", e.tg, strings.Fields(m[1])...)
	}
	aliceHome, bobHome := t.TempDir(), t.TempDir()
	login("alice", aliceHome)
	login("bob", bobHome)

	e.home = aliceHome
	_, errOut := e.run(true, "", e.tg, "request", "create", "--roles=reviewer", "--reason=x")
	mustContain(t, "request for a role no rule allows", errOut, `allows requesting role "reviewer"`)

	// alice waits for the review in the background.
	wait := exec.Command(e.tg, "request", "create", "--roles=access", "--reason=INC-7 hotfix", "--max-duration=30m", "--wait")
	wait.Env = []string{"HOME=" + aliceHome, "PATH=" + os.Getenv("PATH")}
	var waitOut, waitErr lockedBuffer
	wait.Stdout, wait.Stderr = &waitOut, &waitErr
	if err := wait.Start(); err != nil {
		t.Fatal(err)
	}
	idRE := regexp.MustCompile(`access request (\S+) for roles access created`)
	deadline := time.Now().Add(30 * time.Second)
	for idRE.FindStringSubmatch(waitOut.String()) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("tg request create --wait printed %q, %q", waitOut.String(), waitErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	id := idRE.FindStringSubmatch(waitOut.String())[1]

	_, errOut = e.run(true, "", e.tg, "request", "review", id, "--approve")
	mustContain(t, "self-approval", errOut, "cannot review their own access request")

	e.home = bobHome
	ls, _ := e.run(false, "", e.tg, "request", "ls")
	mustContain(t, "bob's tg request ls", ls, id, "alice", "access", "pending", "0/1", "INC-7 hotfix")
	_, errOut = e.run(true, "", e.tg, "request", "review", id, "--approve", "--deny")
	mustContain(t, "both verdicts", errOut, "exactly one of --approve or --deny")
	out, _ := e.run(false, "", e.tg, "request", "review", id, "--approve", "--reason=ok")
	mustContain(t, "review", out, "access request "+id+": approved (requester alice, roles access)")

	if err := wait.Wait(); err != nil {
		t.Fatalf("tg request create --wait: %v\n%s\n%s", err, waitOut.String(), waitErr.String())
	}
	mustContain(t, "--wait", waitOut.String(), "logged in as alice (roles requester,access, access requests "+id+")")
	e.home = aliceHome
	st, _ := e.run(false, "", e.tg, "status")
	mustContain(t, "tg status", st, "access")
	// The same request again, by login: still granted.
	out, _ = e.run(false, "", e.tg, "login", "--request-id="+id)
	mustContain(t, "tg login --request-id", out, "access requests "+id)
	_, errOut = e.run(true, "", e.tg, "login", "--request-id=01NOSUCHREQUEST")
	mustContain(t, "unknown request", errOut, "not found")

	out, _ = e.run(false, "", e.tgl, "requests", "ls")
	mustContain(t, "tollgate requests ls", out, id, "alice", "approved", "1/1")
}
