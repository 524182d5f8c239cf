package main

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestLocksRequestsSessionsCommands runs the admin commands on a data dir
// with no daemon (each opens the state for its own duration, as after a
// restart) and checks what they print and refuse.
func TestLocksRequestsSessionsCommands(t *testing.T) {
	bin := authTestBinary(t)
	dd := "--data-dir=" + t.TempDir()
	authRun(t, bin, false, dd, "users", "add", "alice", "--roles=requester")

	out := string(authRun(t, bin, false, dd, "locks", "add", "--user=alice", "--message=incident 7", "--ttl=1h"))
	m := regexp.MustCompile(`^lock (\S+) placed on user alice, until \S+\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("locks add printed %q", out)
	}
	ls := string(authRun(t, bin, false, dd, "locks", "ls"))
	if !strings.Contains(ls, m[1]) || !strings.Contains(ls, "user alice") || !strings.Contains(ls, "incident 7") {
		t.Fatalf("locks ls:\n%s", ls)
	}
	if e := string(authRun(t, bin, true, dd, "locks", "add", "--user=alice", "--role=dba")); !strings.Contains(e, "exactly one of user, role or session") {
		t.Fatalf("two targets: %s", e)
	}
	if e := string(authRun(t, bin, true, dd, "locks", "add", "--session=a.b")); !strings.Contains(e, "session id") {
		t.Fatalf("malformed session id: %s", e)
	}
	authRun(t, bin, false, dd, "locks", "rm", m[1])
	if ls := string(authRun(t, bin, false, dd, "locks", "ls")); strings.Contains(ls, m[1]) {
		t.Fatalf("lock still listed after rm:\n%s", ls)
	}

	// Unknown targets: placed, with a warning; a known one: no warning.
	for _, c := range []struct{ flag, warn string }{
		{"--user=nobody-here", "no user nobody-here exists yet"},
		{"--role=nosuch", "no role nosuch exists yet; the lock applies if one is created (roles: access, "},
		{"--user=alice", ""},
		{"--role=requester", ""},
	} {
		cmd := exec.Command(bin, dd, "locks", "add", c.flag)
		cmd.Env = append(os.Environ(), "TOLLGATE_CONFIG=")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("locks add %s: %v\n%s", c.flag, err, stderr.Bytes())
		}
		if !strings.HasPrefix(stdout.String(), "lock ") {
			t.Fatalf("locks add %s printed %q", c.flag, stdout.String())
		}
		if c.warn == "" && stderr.Len() > 0 || c.warn != "" && !strings.Contains(stderr.String(), "warning: "+c.warn) {
			t.Fatalf("locks add %s: stderr %q, want %q", c.flag, stderr.String(), c.warn)
		}
	}

	reqs := string(authRun(t, bin, false, dd, "requests", "ls"))
	if !strings.HasPrefix(reqs, "ID") || strings.Count(reqs, "\n") != 1 {
		t.Fatalf("requests ls on an empty cluster:\n%s", reqs)
	}
	if e := string(authRun(t, bin, true, dd, "requests", "approve", "01NOSUCHREQUEST")); !strings.Contains(e, "not found") {
		t.Fatalf("approve of an unknown request: %s", e)
	}
	sess := string(authRun(t, bin, false, dd, "sessions", "ls", "--live"))
	if !strings.HasPrefix(sess, "SID") {
		t.Fatalf("sessions ls:\n%s", sess)
	}
	if e := string(authRun(t, bin, true, dd, "sessions", "replay", "01NOSUCHSESSION")); !strings.Contains(e, "no session 01NOSUCHSESSION") {
		t.Fatalf("replay of an unknown session: %s", e)
	}
	if e := string(authRun(t, bin, true, dd, "sessions", "replay", "X", "--execute")); !strings.Contains(e, "--target") {
		t.Fatalf("--execute without --target: %s", e)
	}
	// Opened again, the state answers the same.
	if again := string(authRun(t, bin, false, dd, "requests", "ls")); again != reqs {
		t.Fatalf("requests ls changed:\n%s\nthen\n%s", reqs, again)
	}
	if again := string(authRun(t, bin, false, dd, "sessions", "ls", "--live")); again != sess {
		t.Fatalf("sessions ls changed:\n%s\nthen\n%s", sess, again)
	}
}
