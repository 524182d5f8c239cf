package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/tollgate-db/tollgate/broker/sso"
	"github.com/tollgate-db/tollgate/events"
	"github.com/tollgate-db/tollgate/test/samlidp"
)

// TestSAMLLogin runs `tg login --auth` against a real SAML identity
// provider (crewjam/saml's samlidp): tollgate sso add/ls through the
// binaries, tg printing the URL (--browser=none), headless Chromium
// signing in on the provider's login form, the signed response posted to
// the broker's ACS, and tg receiving the certificate on its loopback
// callback with the roles and traits of the mapped attributes. A user
// mapped to no role is refused with a message that says so; the events
// have method saml and name the connector.
func TestSAMLLogin(t *testing.T) {
	e := startE2E(t)
	base := "https://" + e.proxy
	idp := samlidp.Start(t, []samlidp.SP{{EntityID: base + sso.SAMLMetadataPath("ent"), ACS: base + sso.SAMLACSPath("ent")}},
		samlidp.User{Username: "alice", Password: idpPassword, Email: "alice@example.com", Groups: []string{"dba"}},
		samlidp.User{Username: "eve", Password: idpPassword, Email: "eve@example.com", Groups: []string{"guests"}})
	file := filepath.Join(t.TempDir(), "ent.yaml")
	if err := os.WriteFile(file, fmt.Appendf(nil, `kind: connector
version: v1
metadata: {name: ent}
spec:
  type: saml
  entity_descriptor_url: %s
  attributes_to_roles:
    - {name: %s, value: "db*", roles: [access], db_users: [app_ro], db_names: [shop]}
`, idp.MetadataURL, samlidp.GroupsAttribute), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := e.run(false, "", e.tgl, "sso", "add", "-f", file)
	mustContain(t, "sso add", out, "connector ent created")
	out, _ = e.run(false, "", e.tgl, "sso", "ls")
	mustContain(t, "sso ls", out, "ent", "saml", idp.MetadataURL, samlidp.GroupsAttribute+"=db*→access")

	signIn := func(user string) []chromedp.Action[chromedp.Void] {
		return []chromedp.Action[chromedp.Void]{
			chromedp.WaitVisible(chromedp.CSS(`input[name=user]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name=user]`), user),
			chromedp.SendKeys(chromedp.CSS(`input[name=password]`), idpPassword),
			chromedp.Click(chromedp.CSS(`input[type=submit]`)),
		}
	}
	out = e.authLogin(ssoBrowser(t), "ent", false, signIn("alice")...)
	mustContain(t, "tg login --auth=ent", out, "logged in as alice@example.com (roles access)")
	st, _ := e.run(false, "", e.tg, "status")
	mustContain(t, "tg status", st, "alice@example.com", "app_ro", "shop")

	errOut := e.authLogin(ssoBrowser(t), "ent", true, signIn("eve")...)
	mustContain(t, "tg login --auth=ent as eve", errOut, "refused", "eve@example.com has no role", samlidp.GroupsAttribute+"=guests")

	logins, admin := e.loginEvents(t, events.LoginSAML, idpPassword)
	if len(logins) != 2 || logins[0]["success"] != true || logins[0]["user"] != "alice@example.com" || logins[0]["connector"] != "ent" ||
		logins[1]["success"] == true || logins[1]["reason"] != events.LoginSSONoRole {
		t.Fatalf("saml user.login events: %v", logins)
	}
	if strings.Join(admin, " ") != "connector.create" {
		t.Fatalf("connector events: %v", admin)
	}
}
