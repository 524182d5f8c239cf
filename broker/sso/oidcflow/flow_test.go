package oidcflow

import (
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/broker/api"
)

// The sealed answer goes only to tg's own loopback listener.
func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:4000/callback/x", "http://[::1]:4000/cb", "http://localhost:4000/cb"} {
		if err := api.CheckLoopback(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for in, want := range map[string]string{
		"https://127.0.0.1:4000/cb":       "want http://127.0.0.1:PORT",
		"http://127.0.0.1/cb":             "want http://127.0.0.1:PORT",
		"http://evil.example:4000/cb":     "loopback",
		"http://10.0.0.1:4000/cb":         "loopback",
		"http://u:p@127.0.0.1:4000/cb":    "want http://127.0.0.1:PORT",
		"javascript:alert(1)":             "want http://127.0.0.1:PORT",
		"http://127.0.0.1.evil.com:80/cb": "loopback",
	} {
		if err := api.CheckLoopback(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{"/audit?x=1": "/audit?x=1", "//evil": "/", "/\\evil": "/", "https://evil": "/", "": "/", "/a\tb": "/"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}
