package daemon_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-db/tollgate/broker/api"
	"github.com/tollgate-db/tollgate/broker/login"
	"github.com/tollgate-db/tollgate/broker/state"
	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/events"
)

// A signed certificate is only as good as its user is now: once the
// editor role is taken from a user, their certificate no longer creates
// join tokens; once the user is removed (here by another process, as
// `tollgate users rm` does), the certificate is refused at once, and the
// refusal is audited.
func TestRemovedUserAndRoleAtTheAPI(t *testing.T) {
	b := startBroker(t, login.Options{})
	ctx := ctxT(t)
	c := b.client(t, nil)
	invite := b.addUser(t, "ed", "editor", "access")
	cert, _, err := b.login(t, c, "ed", goodPassword, invite)
	if err != nil {
		t.Fatal(err)
	}
	ed := b.client(t, cert)
	if _, err := ed.AddToken(ctx, api.AddTokenRequest{Type: "db"}); err != nil {
		t.Fatalf("editor creating a join token: %v", err)
	}

	// Another process changes STATE, as the admin commands do.
	other, err := state.Open(ctx, b.js, config.DefaultCluster)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.UpdateUser(ctx, admin, "ed", func(u *state.User) error { u.Roles = []string{"access"}; return nil }); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		_, err = ed.AddToken(ctx, api.AddTokenRequest{Type: "db"})
		if err != nil || time.Since(start) > 5*time.Second {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if statusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "needs the editor role; user ed holds [access]") {
		t.Fatalf("join token by a user whose editor role was removed: %v", err)
	}
	t.Logf("editor role removed → join token refused at the API after %s", time.Since(start).Round(time.Microsecond))
	who, err := ed.Whoami(ctx)
	if err != nil || strings.Join(who.Identity.Roles, ",") != "access" {
		t.Fatalf("whoami after the role was removed: %+v %v", who, err)
	}

	if err := other.DeleteUser(ctx, admin, "ed"); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for {
		_, err = ed.Whoami(ctx)
		if err != nil || time.Since(start) > 5*time.Second {
			break
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	if statusOf(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "user ed no longer exists") {
		t.Fatalf("removed user's certificate: %v", err)
	}
	t.Logf("users rm → refusal at the API after %s", took.Round(time.Microsecond))
	if took > time.Second {
		t.Fatalf("the removal took %s to reach the API", took)
	}
	if e := b.lastAudit(t, "user.login"); e.str("user") != "ed" || e.str("reason") != events.LoginUnknownUser || e.m["success"] != false {
		t.Fatalf("audit of the refusal: %s", e.raw)
	}
}
