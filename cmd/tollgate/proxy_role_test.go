package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-db/tollgate/config"
)

// A proxy without the broker runs the proxy role alone, listens on
// proxy.listen and nowhere else (no embedded NATS), and reaches the event
// plane through the broker's port unless nats.urls is set.
func TestProxyRoleConfiguration(t *testing.T) {
	cfg, err := config.Parse([]byte(`broker: {enabled: false}
proxy:
  enabled: true
  listen: 0.0.0.0:3080
  public_addr: proxy2.example:3080
  broker_addr: broker.example:3080
  join_token: t
  broker_ca_pin: ` + testPin + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	var roles []string
	for _, r := range startRoles {
		if roleSelected(r, cfg) {
			roles = append(roles, r.Name)
		}
	}
	if !slices.Equal(roles, []string{"proxy"}) {
		t.Fatalf("roles %v, want the proxy alone", roles)
	}
	if addrs := startListenAddrs(cfg); len(addrs) != 1 || addrs[0].key != "proxy.listen" {
		t.Fatalf("listens on %+v, want proxy.listen alone", addrs)
	}
	var b strings.Builder
	if err := checkStart(&b, cfg); err != nil || !strings.Contains(b.String(), "roles proxy, nats through the broker's port broker.example:3080") {
		t.Fatalf("check: %v %q", err, b.String())
	}
	cfg.NATS.URLs = []string{"tls://n:4222"}
	if eventsViaBroker(cfg) {
		t.Fatal("with nats.urls the proxy still goes through the broker's port")
	}
}
