package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeBlock returns the lines of the first ```sh block under the README
// heading.
func readmeBlock(t *testing.T, heading string) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	state := 0 // 0: before the heading, 1: in its section, 2: in the block
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case state == 0 && line == heading:
			state = 1
		case state == 1 && strings.HasPrefix(line, "## "):
			t.Fatalf("README: no ```sh block under %q", heading)
		case state == 1 && line == "```sh":
			state = 2
		case state == 2 && strings.HasPrefix(line, "```"):
			return block
		case state == 2:
			block = append(block, line)
		}
	}
	t.Fatalf("README: no heading %q or its block does not end", heading)
	return nil
}

// stripComment removes a trailing shell comment: a # at the start of a
// word, outside quotes.
func stripComment(line string) string {
	var quote rune
	for i, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return strings.TrimSpace(line[:i])
		}
	}
	return strings.TrimSpace(line)
}

var (
	shellAssignment = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=\S*$`)
	// A placeholder is a word in capitals the reader replaces with what
	// an earlier command printed; $C and the like are shell variables.
	placeholder = regexp.MustCompile(`(^|[^$A-Za-z0-9_])([A-Z][A-Z0-9_]*[A-Z0-9])\b`)
)

// TestReadmeWalkthrough runs the commands of the README's "The first hour"
// as written, in the order written, against a demo started as `make run`
// starts it, from one working directory with the binaries first in PATH.
// Each line of the block is a shell command and runs in sh; the block's
// assignments (C=--config=…) become the variables of later lines. The
// capitalised placeholders (SID, TOKEN, HEX, REQUEST_ID, LOCK_ID) take the
// values earlier commands printed. The one change to the README's text:
// the proxy's default address, 127.0.0.1:3080, becomes the free port the
// demo was started with. Every command must succeed; the README describes
// no refusal, so one added later fails here until this test learns it.
func TestReadmeWalkthrough(t *testing.T) {
	began := time.Now()
	const readmeProxy = "127.0.0.1:3080"
	block := readmeBlock(t, "## The first hour")

	work := t.TempDir()
	d := startDemoIn(t, work)
	t.Logf("%6.1fs demo up", time.Since(began).Seconds())

	// Extra checks beside the README's commands; each must find its
	// command in the block, so a README that drops one fails here.
	const query = "select current_user || '/' || current_database() as walkthrough;\n"
	const mariadbQuery = "select concat(current_user(), '/', database()) as walkthrough;\n"
	const redisCommands = "SET walkthrough redis\nACL WHOAMI\n"
	dbLs := func(what string) string {
		out, errb, err := d.run(d.tg, "db", "ls")
		if err != nil {
			t.Fatalf("tg db ls as carol %s: %v\n%s%s", what, err, out, errb)
		}
		return out
	}
	vals := map[string]string{}
	var printedLogin string
	checks := []struct {
		// match is a substring of the command, after its placeholders
		// are filled.
		match string
		check func(out string)
		seen  int
	}{
		{match: "-i tollgate-demo/demo.identity db ls", check: func(out string) {
			if !strings.Contains(out, "demo-postgres") {
				t.Fatalf("the demo user's db ls does not list demo-postgres:\n%s", out)
			}
		}},
		{match: "-i tollgate-demo/demo.identity db connect demo-mariadb", check: func(out string) {
			if !strings.Contains(out, "demo@%/demo") {
				t.Fatalf("mariadb through tg db connect as demo printed:\n%s", out)
			}
		}},
		{match: "-i tollgate-demo/demo.identity db connect demo-redis", check: func(out string) {
			if f := strings.Fields(out); len(f) != 2 || f[0] != "OK" || f[1] != "demo" {
				t.Fatalf("redis-cli through tg db connect as demo printed:\n%s", out)
			}
		}},
		{match: "-i tollgate-demo/demo.identity db connect demo-postgres", check: func(out string) {
			if !strings.Contains(out, "demo/demo") {
				t.Fatalf("psql through tg db connect as demo printed:\n%s", out)
			}
		}},
		{match: "sessions ls", check: func(out string) {
			for _, line := range strings.Split(out, "\n")[1:] {
				if f := strings.Fields(line); len(f) > 2 && f[1] == "demo" && f[2] == "demo-postgres" {
					vals["SID"] = f[0]
				}
			}
			if vals["SID"] == "" {
				t.Fatalf("sessions ls shows no session of the demo user:\n%s", out)
			}
		}},
		{match: "sessions replay", check: func(out string) {
			if !strings.Contains(out, "walkthrough") {
				t.Fatalf("the replay does not show the demo user's statement:\n%s", out)
			}
		}},
		{match: "users add carol", check: func(out string) {
			m := regexp.MustCompile(`(?m)^\s*(tg login --proxy=\S+ --user=carol --invite=(\S+) --ca-pin=sha256:([0-9a-fA-F]+))$`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("users add printed no tg login line:\n%s", out)
			}
			printedLogin, vals["TOKEN"], vals["HEX"] = m[1], m[2], m[3]
		}},
		{match: "tg login --proxy=", check: func(string) {}},
		{match: "tg request create", check: func(out string) {
			m := regexp.MustCompile(`access request (\S+) for roles access created`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("tg request create printed:\n%s", out)
			}
			vals["REQUEST_ID"] = m[1]
			if ls := dbLs("before the approval"); strings.Contains(ls, "demo-postgres") {
				t.Fatalf("carol reaches demo-postgres before her request is approved:\n%s", ls)
			}
		}},
		{match: "requests approve", check: func(string) {}},
		{match: "tg login --request-id=", check: func(string) {
			if ls := dbLs("after the approval"); !strings.Contains(ls, "demo-postgres") {
				t.Fatalf("carol's db ls after the approval does not list demo-postgres:\n%s", ls)
			}
		}},
		{match: "tg db connect demo-postgres", check: func(out string) {
			if !strings.Contains(out, "demo/demo") {
				t.Fatalf("psql through tg db connect as carol printed:\n%s", out)
			}
		}},
		{match: "locks add --user=carol", check: func(out string) {
			m := regexp.MustCompile(`^lock (\S+) placed on user carol`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("locks add printed:\n%s", out)
			}
			vals["LOCK_ID"] = m[1]
			// "new ones are refused"
			cmd := exec.Command(d.tg, "db", "connect", "demo-postgres", "--db-user=demo", "--db-name=demo")
			cmd.Env, cmd.Stdin = d.env(), strings.NewReader(query)
			if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "incident 7: access paused") {
				t.Fatalf("carol's tg db connect under the lock: %v\n%s", err, out)
			}
		}},
		{match: "locks ls", check: func(out string) {
			if !strings.Contains(out, vals["LOCK_ID"]) || !strings.Contains(out, "user carol") || !strings.Contains(out, "incident 7") {
				t.Fatalf("locks ls does not show carol's lock %s:\n%s", vals["LOCK_ID"], out)
			}
		}},
		{match: "locks rm", check: func(string) {}},
		{match: "audit verify --file copy.jsonl", check: func(out string) {
			if !strings.HasPrefix(out, "intact:") {
				t.Fatalf("the offline verify printed:\n%s", out)
			}
		}},
		{match: "audit verify", check: func(out string) {
			if !strings.HasPrefix(out, "intact:") {
				t.Fatalf("audit verify printed:\n%s", out)
			}
		}},
	}

	// The binaries first in PATH, as `export PATH=$PWD/bin:$PATH`.
	env := d.env("PATH=" + d.dir + string(os.PathListSeparator) + os.Getenv("PATH"))
	for n, raw := range block {
		line := stripComment(raw)
		if line == "" {
			continue
		}
		if m := shellAssignment.FindStringSubmatch(line); m != nil {
			// The shell's own reading of the value.
			cmd := exec.Command("sh", "-c", line+`; printf %s "$`+m[1]+`"`)
			cmd.Dir, cmd.Env = work, env
			v, err := cmd.Output()
			if err != nil {
				t.Fatalf("README line %q: %v", raw, err)
			}
			env = append(env, m[1]+"="+string(v))
			continue
		}
		line = strings.ReplaceAll(line, readmeProxy, d.proxy)
		line = placeholder.ReplaceAllStringFunc(line, func(s string) string {
			m := placeholder.FindStringSubmatch(s)
			v, ok := vals[m[2]]
			if !ok {
				t.Fatalf("README line %q: no earlier command printed a value for %s", raw, m[2])
			}
			return m[1] + v
		})
		var stdin string
		fields := strings.Fields(line)
		switch {
		case fields[0] == "tg" && strings.Contains(line, " db connect demo-mariadb "):
			stdin = mariadbQuery
		case fields[0] == "tg" && strings.Contains(line, " db connect demo-redis "):
			stdin = redisCommands
		case fields[0] == "tg" && strings.Contains(line, " db connect "):
			stdin = query
		case fields[0] == "tg" && strings.Contains(line, " --invite="):
			// The line users add printed, but for the placeholders' names.
			if printed := strings.ReplaceAll(printedLogin, readmeProxy, d.proxy); line != printed {
				t.Fatalf("README line %q is not the command users add printed:\n  %s", raw, printedLogin)
			}
			stdin = "a password of the walkthrough\n"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, "sh", "-c", line)
		cmd.Dir, cmd.Env = work, env
		cmd.Stdin = strings.NewReader(stdin)
		cmd.WaitDelay = 5 * time.Second
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		cancel()
		if err != nil {
			// The walkthrough has no command meant to be refused: the
			// README or the product is wrong.
			t.Fatalf("line %d of the README's block, %q (run as %q), failed: %v\n%s%s", n+1, raw, line, err, out.String(), errb.String())
		}
		t.Logf("%6.1fs %s", time.Since(began).Seconds(), line)
		for i := range checks {
			if strings.Contains(line, checks[i].match) {
				checks[i].seen++
				checks[i].check(out.String())
				break
			}
		}
	}
	for _, c := range checks {
		if c.seen == 0 {
			t.Errorf("the README's walkthrough no longer runs a command with %q", c.match)
		}
	}
	if _, err := os.Stat(filepath.Join(work, "copy.jsonl")); err != nil {
		t.Errorf("the walkthrough's copy of the trail: %v", err)
	}
}
