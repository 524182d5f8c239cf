package security

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The attacks in this file need a trail of signed frames and chained,
// sealed sessions (the publisher's frame writer): on a trail of single
// unsigned events they succeed, which is why frames exist.

// A copy cut short: an exported file whose last lines (the last session's
// end) are gone fails `audit verify --file --strict` naming the session;
// the whole copy, in every export format, verifies offline against the
// host CA.
func TestTamperTruncatedExport(t *testing.T) {
	w := newWorld(t)
	for i := range 3 {
		if err := w.query(w.userCert, w.userKey, fmt.Sprintf("SELECT 'export %d'", i)); err != nil {
			t.Fatal(err)
		}
	}
	w.waitEnded(3)
	ca := w.hostCAFile()
	for _, format := range []string{"json", "cloudevents", "ocsf"} {
		t.Run(format, func(t *testing.T) {
			out, err := w.stdout("audit", "tail", "--format="+format)
			if err != nil {
				t.Fatalf("audit tail: %v\n%s", err, out)
			}
			whole := filepath.Join(t.TempDir(), "whole.jsonl")
			if err := os.WriteFile(whole, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			if v, err := w.stdout("audit", "verify", "--file", whole, "--host-ca", ca, "--strict"); err != nil || !strings.HasPrefix(v, "intact: ") || !strings.Contains(v, "3 sealed") {
				t.Fatalf("whole copy: %v\n%s", err, v)
			}
			// Cut at the last session's end.
			lines := strings.Split(strings.TrimSpace(out), "\n")
			last := -1
			for i, l := range lines {
				if strings.Contains(l, `db.session.end`) {
					last = i
				}
			}
			if last < 0 {
				t.Fatalf("no session end in the copy:\n%s", out)
			}
			sid := sessionOf(t, lines[last])
			cut := filepath.Join(t.TempDir(), "cut.jsonl")
			if err := os.WriteFile(cut, []byte(strings.Join(lines[:last], "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			v, err := w.stdout("audit", "verify", "--file", cut, "--host-ca", ca, "--strict")
			if err == nil || !strings.Contains(v, "session "+sid) || !strings.Contains(v, "no db.session.end") {
				t.Fatalf("cut copy (session %s's end removed): %v\n%s", sid, err, v)
			}
		})
	}
}

// sessionOf is the session id in an exported line: the value of the first
// "sid" member (native and CloudEvents data) or of correlation_uid (OCSF).
func sessionOf(t *testing.T, line string) string {
	t.Helper()
	for _, key := range []string{`"sid":"`, `"correlation_uid":"`} {
		if i := strings.Index(line, key); i >= 0 {
			rest := line[i+len(key):]
			return rest[:strings.IndexByte(rest, '"')]
		}
	}
	t.Fatalf("no session id in %s", line)
	return ""
}
