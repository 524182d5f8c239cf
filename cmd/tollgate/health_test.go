package main

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/config"
)

func TestReadyzFollowsStartAndAudit(t *testing.T) {
	h := &health{}
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if c, _ := get("/healthz"); c != http.StatusOK {
		t.Fatalf("healthz %d", c)
	}
	if c, b := get("/readyz"); c != http.StatusServiceUnavailable || !strings.Contains(b, "starting") {
		t.Fatalf("readyz before start: %d %q", c, b)
	}
	h.started.Store(true)
	waiting := []string{"broker"}
	h.starting.Store(&startingFunc{func() []string { return waiting }})
	if c, b := get("/readyz"); c != http.StatusServiceUnavailable || !strings.Contains(b, "starting: broker") {
		t.Fatalf("readyz while the broker starts: %d %q", c, b)
	}
	waiting = nil
	var fault error
	f := func() error { return fault }
	h.fault.Store(&f)
	if c, _ := get("/readyz"); c != http.StatusOK {
		t.Fatalf("readyz started: %d", c)
	}
	fault = errors.New("deny_delete is off")
	if c, b := get("/readyz"); c != http.StatusServiceUnavailable || !strings.Contains(b, "AUDIT stream: deny_delete is off") {
		t.Fatalf("readyz with AUDIT weakened: %d %q", c, b)
	}
	if c, _ := get("/other"); c != http.StatusNotFound {
		t.Fatalf("other path %d", c)
	}

	// Ready only once the roles' own ports accept connections.
	fault = nil
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	closed := freeAddr(t)
	h.dial = []listenAddr{{addr: "0.0.0.0:" + port, key: "proxy.listen"}, {addr: closed, key: "db_service.listen"}}
	if c, b := get("/readyz"); c != http.StatusServiceUnavailable || !strings.Contains(b, closed+" (db_service.listen) does not accept connections yet") {
		t.Fatalf("readyz with the agent's port closed: %d %q", c, b)
	}
	h.dial = h.dial[:1]
	if c, b := get("/readyz"); c != http.StatusOK {
		t.Fatalf("readyz with the proxy's port open (dialled on loopback): %d %q", c, b)
	}
	ln.Close()
	if c, _ := get("/readyz"); c != http.StatusServiceUnavailable {
		t.Fatalf("readyz after the proxy's port closed: %d", c)
	}
}

func TestStartCheck(t *testing.T) {
	defer func(r []string) { flagRoles = r }(flagRoles)
	const nats = "nats:\n  urls: [tls://nats:4222]\n  credentials_dir: /etc/tollgate/nats-auth\n"
	for name, tc := range map[string]struct {
		roles []string
		yaml  string
		want  string // in the output, or in the error when bad
		bad   bool
	}{
		"defaults":           {nil, "", "roles broker, nats embedded, audit strict", false},
		"exporter":           {[]string{"exporter"}, nats + "exporters:\n  - {name: f, type: file, settings: {path: /tmp/x}}\n", "roles exporter, nats tls://nats:4222", false},
		"exporter none":      {[]string{"exporter"}, nats, "exporter: no exporters in the configuration", true},
		"exporter sink":      {[]string{"exporter"}, nats + "exporters:\n  - {name: f, type: fax}\n", `exporters[0] (f).type: "fax" is not a sink type (want one of`, true},
		"exporter format":    {[]string{"exporter"}, nats + "exporters:\n  - {name: f, type: file, format: xml}\n", `exporters[0] (f).format`, true},
		"exporter sink key":  {[]string{"exporter"}, nats + "exporters:\n  - {name: f, type: file, settings: {pth: /tmp/x}}\n", `unknown key "exporters[0] (f).settings.pth"`, true},
		"exporter sink type": {[]string{"exporter"}, nats + "exporters:\n  - {name: f, type: file, settings: {path: /tmp/x, max_files: lots}}\n", "max_files", true},
		"exporter delivery":  {[]string{"exporter"}, nats + "exporters:\n  - {name: f, type: file, settings: {batch_size: many}}\n", `batch_size`, true},
		"agent no db":        {[]string{"agent"}, nats + "broker: {enabled: false}\nproxy: {enabled: false}\ndb_service:\n  proxy_addrs: [p:3080]\n  join_token: x\n  broker_ca_pin: sha256:ab\n", "agent: db_service.databases lists no database", true},
		"agent no pin": {[]string{"agent"}, nats + "broker: {enabled: false}\nproxy: {enabled: false}\ndb_service:\n  proxy_addrs: [p:3080]\n  join_token: x\n  databases: [{name: a, protocol: postgres, uri: 'db:5432'}]\n",
			"join_token without db_service.broker_ca_pin", true},
		"agent bad pin": {[]string{"agent"}, nats + "broker: {enabled: false}\nproxy: {enabled: false}\ndb_service:\n  proxy_addrs: [p:3080]\n  join_token: x\n  broker_ca_pin: sha256:zz\n  databases: [{name: a, protocol: postgres, uri: 'db:5432'}]\n",
			"db_service.broker_ca_pin: CA pin", true},
		"anonymous": {[]string{"broker"}, "nats:\n  urls: [nats://n:4222]\n", "warning: nats.urls without credentials", false},
	} {
		t.Run(name, func(t *testing.T) {
			flagRoles = tc.roles
			cfg, err := config.Parse([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err = checkStart(&out, cfg)
			switch {
			case tc.bad && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			case !tc.bad && err != nil:
				t.Fatal(err)
			case !tc.bad && !strings.Contains(out.String(), tc.want):
				t.Fatalf("output %q, want %q", out.String(), tc.want)
			}
		})
	}
}
