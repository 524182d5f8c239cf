package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoAgent keeps the agent's dependencies out of the user's
// client: tg is installed on every user's machine, and the AWS SDK,
// Kerberos, the NATS server and the engines would only make it larger and
// widen what a vulnerability report about any of them reaches. What tg
// needs of the agent's conventions lives in the protocol package.
func TestLinksNoAgent(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command in PATH to list tg's dependencies with: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/aws/",
		"github.com/jcmturner/gokrb5",
		"github.com/nats-io/nats-server",
		"github.com/tollgate-db/tollgate/agent",
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(pkg, f) {
				t.Errorf("tg links %s", pkg)
			}
		}
	}
}
