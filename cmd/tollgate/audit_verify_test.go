package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An exporter's file verifies like the stream: copies delivered twice are
// no defect, a line taken out is.
func TestAuditVerifyFile(t *testing.T) {
	var lines []string
	for i, typ := range []string{"db.session.start", "db.session.query", "db.session.result", "db.session.end"} {
		lines = append(lines, fmt.Sprintf(`{"id":"e%d","type":%q,"sid":"s1","ei":%d}`, i, typ, i))
	}
	write := func(ls []string) string {
		p := filepath.Join(t.TempDir(), "audit.jsonl")
		if err := os.WriteFile(p, []byte(strings.Join(ls, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sum, err := verifyFile(auditVerifyFlags{file: write(append(lines, lines[1]))})
	if err != nil || !sum.Intact() || sum.Duplicates != 1 || sum.Ended != 1 {
		t.Fatalf("%v %+v", err, sum)
	}
	sum, err = verifyFile(auditVerifyFlags{file: write(append(lines[:2:2], lines[3]))})
	if err != nil || sum.Intact() || !strings.Contains(sum.Defects[0].String(), "ei 2 to 2 are missing") {
		t.Fatalf("%v %+v", err, sum)
	}
	if _, err := verifyFile(auditVerifyFlags{file: "x", session: "s"}); err == nil {
		t.Fatal("--file with --session accepted")
	}
}
